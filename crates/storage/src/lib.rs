//! berth's layer storage: the safe layer extractor (OCI whiteouts to overlayfs whiteouts,
//! every path resolved beneath the layer root), the per-chain-ID layer directories, and
//! container root filesystems as overlay mounts (or copies where overlayfs is unavailable).

pub mod diff;
pub mod digest;
pub mod layers;
pub mod snapshot;
pub mod tarstream;
pub mod unpack;

use std::path::Path;

pub use diff::{write_layer, LayerTar};
pub use digest::Digest;
pub use layers::{unique_suffix, LayerStore};
pub use snapshot::{Driver, OverlayMount, Snapshotter};
pub use unpack::{unpack, unpack_within, Compression, SizeLimit, UnpackStats};

pub use berth_sys::{Error, Kind};

/// An I/O error on `path`: its errno kept, the path as its context.
pub(crate) fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::from_io(e).context(path.display())
}
