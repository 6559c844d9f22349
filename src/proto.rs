//! Code generated from `proto/` by `build.rs`.

/// `codepipeline_gateway.v1`: the job-worker API.
pub mod v1 {
    tonic::include_proto!("codepipeline_gateway.v1");
}

/// The encoded descriptors of our protos (and their imports), served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("codepipeline_gateway_descriptor");

/// Descriptors of the google.rpc error details the gateway sends, served by
/// reflection so that grpcurl can decode them.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("google_rpc_error_details_descriptor");

/// The fully qualified name of the job-worker service, as health checks name it.
pub const JOB_WORKER_SERVICE_NAME: &str = "codepipeline_gateway.v1.JobWorkerService";
