//! berth's layer storage: the safe layer extractor (OCI whiteouts to overlayfs whiteouts,
//! every path resolved beneath the layer root), the per-chain-ID layer directories, and
//! container root filesystems as overlay mounts (or copies where overlayfs is unavailable).

pub mod digest;
pub mod layers;
pub mod snapshot;
pub mod sys;
pub mod tarstream;
pub mod unpack;

use std::fmt;
use std::path::Path;

pub use digest::Digest;
pub use layers::{unique_suffix, LayerStore};
pub use snapshot::{Driver, OverlayMount, Snapshotter};
pub use unpack::{unpack, unpack_within, Compression, SizeLimit, UnpackStats};

/// An error with its full context in the message: which layer, which entry, what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
    pub fn io(path: &Path, e: std::io::Error) -> Error {
        Error(format!("{}: {e}", path.display()))
    }
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Into berth's one error type, for the crates above (until this crate's errors are that type).
impl From<Error> for berth_sys::Error {
    fn from(e: Error) -> berth_sys::Error {
        berth_sys::Error::msg(e.0)
    }
}
