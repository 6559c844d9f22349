//! Code generated from `proto/` by `build.rs`.

/// `codepipeline_gateway.v1`: the job-worker API.
pub mod v1 {
    tonic::include_proto!("codepipeline_gateway.v1");
}

/// The encoded descriptors of our protos (and their imports), served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("codepipeline_gateway_descriptor");

/// The fully qualified name of the job-worker service, as health checks name it.
pub const JOB_WORKER_SERVICE_NAME: &str = "codepipeline_gateway.v1.JobWorkerService";
