//! Compiles the gateway's protos with protox (a pure-Rust protobuf compiler),
//! so building needs no system `protoc`. The encoded descriptor set is also
//! written out for the reflection service, with the google.rpc error details.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["codepipeline_gateway/v1/job_worker.proto"];
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("codepipeline_gateway_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    // The google.rpc error details are served by reflection only, so that
    // grpcurl can decode them; tonic-types provides them to Rust code.
    let error_details = protox::compile(["google/rpc/error_details.proto"], ["proto"])?;
    fs::write(
        out_dir.join("google_rpc_error_details_descriptor.bin"),
        prost::Message::encode_to_vec(&error_details),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // prost's codec, with undecodable requests blamed on the caller.
        .codec_path("crate::codec::Codec")
        // Sorted, so that equal requests encode to equal bytes (the replay
        // memory compares digests of them).
        .btree_map(".codepipeline_gateway.v1.PutJobSuccessResultRequest.output_variables")
        .compile_fds(descriptors)?;
    Ok(())
}
