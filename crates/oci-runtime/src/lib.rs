//! berth's OCI runtime: an OCI bundle (config.json + rootfs) to a running, isolated container,
//! with the lifecycle operations of the runtime-spec (create, start, state, kill, delete) and
//! runc's common extras (run, pause, resume, ps, update, events, list).
//!
//! No async runtime: the container's init is a clone3 child of the calling process that sets
//! itself up and execs. See docs/ARCHITECTURE.md for the start sequence.

pub mod attrs;
pub mod caps;
pub mod cgroups;
pub mod config;
pub mod create;
pub mod error;
pub mod exec;
pub mod features;
pub mod fs;
pub mod hooks;
pub mod init;
pub mod intermediate;
pub mod lifecycle;
pub mod mounts;
pub mod namespaces;
pub mod plans;
pub mod process;
pub mod procfs;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod selfexe;
pub mod spec;
pub mod state;
pub mod sync;
pub mod terminal;

pub use create::{create, ConsoleTarget, CreateOptions, Created};
pub use error::{Error, ErrorKind, Result};
pub use run::{run, RunOptions};
pub use state::Status;
