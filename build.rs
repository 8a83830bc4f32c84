//! Generates the `podprobe.v1.Identity` gRPC code from proto/ with the
//! vendored protoc, so building needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/podprobe/v1/identity.proto";
    println!("cargo:rerun-if-changed={proto}");
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    // podprobe's client speaks HTTP/2 itself (probe/grpc/conn.rs): only the
    // server side of the service is generated.
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
