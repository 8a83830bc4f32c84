//! gRPC distribution across replicas: does a client's stream of RPCs reach
//! every replica behind a Service, or is it pinned to one connection?

/// Code generated from proto/podprobe/v1/identity.proto.
pub mod pb {
    tonic::include_proto!("podprobe.v1");
}
