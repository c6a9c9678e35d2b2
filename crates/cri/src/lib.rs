//! berthd, berth's Kubernetes CRI v1 server: the library behind the `berthd` binary.
//!
//! - [`proto`]: the CRI v1 types, server traits and clients generated from
//!   `proto/runtime/v1/api.proto` (Kubernetes v1.36's `runtime.v1` package).

/// The CRI v1 API (`runtime.v1`), generated at build time by tonic-prost-build from the
/// descriptor protox compiles (no protoc).
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("runtime.v1");
}

/// The encoded `FileDescriptorSet` of `proto/runtime/v1/api.proto`, as compiled at build time.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runtime_v1.descriptor.bin"));
