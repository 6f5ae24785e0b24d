//! Generates the SPIFFE Workload API's messages and gRPC service from
//! `proto/workload.proto`, with a protobuf compiler written in Rust (no
//! `protoc` needed on the build machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    let descriptors = protox::compile(["workload.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
