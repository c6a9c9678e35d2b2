//! berthd, berth's Kubernetes CRI v1 server: the library behind the `berthd` binary.
//!
//! - [`proto`]: the CRI v1 types, server traits and clients generated from
//!   `proto/runtime/v1/api.proto` (Kubernetes v1.36's `runtime.v1` package).
//! - [`service`]: berthd's RuntimeService and ImageService on the engine the `berth` CLI
//!   uses (pods, containers, images, stats, events); the RPCs not implemented yet (streaming,
//!   checkpoints, metrics) fail with gRPC `Unimplemented`, naming themselves.
//! - [`config`]: the `[cri]` section of berth.toml.
//! - [`socket`]: the listening Unix socket (mode 0600, one berthd per socket, stale sockets
//!   replaced, removed on shutdown).
//! - [`paths`]: the store root and configuration file, found as the `berth` CLI finds them,
//!   and `--listen` values.

pub mod config;
pub mod deadline;
pub mod paths;
pub mod service;
pub mod socket;
pub mod streaming;

/// The CRI v1 API (`runtime.v1`), generated at build time by tonic-prost-build from the
/// descriptor protox compiles (no protoc).
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("runtime.v1");
}

/// The encoded `FileDescriptorSet` of `proto/runtime/v1/api.proto`, as compiled at build time.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runtime_v1.descriptor.bin"));

/// `VersionResponse.runtime_name`.
pub const RUNTIME_NAME: &str = "berth";
/// `VersionResponse.runtime_version`: berth's release.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
/// `VersionResponse.runtime_api_version`: the CRI version served.
pub const RUNTIME_API_VERSION: &str = "v1";
/// `VersionResponse.version`: the kubelet-facing API version. kubelet refuses a runtime that
/// answers anything else ("runtime api version is not supported"); containerd and CRI-O send
/// the same.
pub const KUBELET_API_VERSION: &str = "0.1.0";

/// An error that says what failed and where (paths, addresses, system errors).
#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }

    /// `what: err`, e.g. `Error::io("bind /run/berth/berthd.sock", e)`.
    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Error {
        Error(format!("{what}: {err}"))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Held by unit tests that create files: [`socket::bind`] changes the process's umask for a
/// moment, which must not narrow another test's files or directories.
#[cfg(test)]
pub(crate) static FS_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
