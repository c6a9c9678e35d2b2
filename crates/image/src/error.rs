use std::fmt;

/// An error whose message carries its whole context: the image, the registry, the manifest
/// field, the layer digest, the file.
#[derive(Debug)]
pub struct Error(String);

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into())
    }
    pub fn context(self, c: impl fmt::Display) -> Error {
        Error(format!("{c}: {}", self.0))
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

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error(e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error(format!("metadata database: {e}"))
    }
}

impl From<berth_storage::Error> for Error {
    fn from(e: berth_storage::Error) -> Error {
        Error(e.message().to_string())
    }
}

impl From<String> for Error {
    fn from(e: String) -> Error {
        Error(e)
    }
}

/// `?` with context: `io_ctx(path)`.
pub trait Context<T> {
    fn ctx(self, c: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, c: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{c}: {e}")))
    }
}

macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::error::Error::msg(format!($($t)*))) };
}
pub(crate) use bail;
