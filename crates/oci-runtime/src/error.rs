//! The runtime's errors are berth's one error type (`berth_sys::Error`): a kind callers branch
//! on, a message that says what failed and where (the JSON path in config.json, the mount, the
//! cgroup file), and the errno. The container's init sends its errors to the runtime over the
//! sync socket with the kind's name, so they survive the process boundary.

pub use berth_sys::error::{strerror, Context, Error, Kind as ErrorKind, Result};
