//! The engine's errors are berth's one error type (`berth_sys::Error`): a kind the front ends
//! branch on (the CLI's exit codes, the CRI server's gRPC codes) that survives the context
//! added on the way up, and a message in the engine's own terms.

pub(crate) use berth_sys::bail;
pub use berth_sys::error::{Context, Error, Kind, Result};
