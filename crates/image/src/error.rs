//! The image crate's errors are berth's one error type (`berth_sys::Error`): a kind (the image
//! or tag not found, a digest mismatch as data loss, a registry's refusal as permission
//! denied, a registry down as unavailable, a deadline passed, a size limit reached) and a
//! message that carries the whole context: the image, the registry, the manifest field, the
//! layer digest, the file.

pub use berth_sys::error::{Context, Error, Kind, Result};

/// `bail!("...")`: an error of no particular kind; `bail!(Kind, "...")`: of that kind.
macro_rules! bail {
    ($kind:ident, $fmt:literal $($t:tt)*) => {
        return Err($crate::error::Error::new($crate::error::Kind::$kind, format!($fmt $($t)*)))
    };
    ($($t:tt)*) => { return Err($crate::error::Error::msg(format!($($t)*))) };
}
pub(crate) use bail;
