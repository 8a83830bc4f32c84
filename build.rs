//! Generates the `podprobe.v1.Identity` gRPC code from proto/ with the
//! vendored protoc, so building needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/podprobe/v1/identity.proto";
    println!("cargo:rerun-if-changed={proto}");
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_protos(&[proto], &["proto"])?;
    Ok(())
}
