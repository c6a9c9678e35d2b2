use std::fmt;

/// What kind of failure, for callers that branch (the CLI's exit codes, the CRI server's
/// gRPC codes); the message carries the whole context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    Ambiguous,
    Conflict,
    Invalid,
    Unsupported,
    System,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, m: impl Into<String>) -> Error {
        Error { kind, msg: m.into() }
    }
    pub fn msg(m: impl Into<String>) -> Error {
        Error::new(Kind::System, m)
    }
    pub fn invalid(m: impl Into<String>) -> Error {
        Error::new(Kind::Invalid, m)
    }
    pub fn not_found(m: impl Into<String>) -> Error {
        Error::new(Kind::NotFound, m)
    }
    pub fn conflict(m: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, m)
    }
    pub fn unsupported(m: impl Into<String>) -> Error {
        Error::new(Kind::Unsupported, m)
    }
    pub fn context(self, c: impl fmt::Display) -> Error {
        Error { kind: self.kind, msg: format!("{c}: {}", self.msg) }
    }
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::msg(e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::msg(format!("metadata database: {e}"))
    }
}

impl From<berth_image::Error> for Error {
    fn from(e: berth_image::Error) -> Error {
        let m = e.message().to_string();
        let kind = if m.contains("not found") { Kind::NotFound } else { Kind::System };
        Error::new(kind, m)
    }
}

impl From<berth_network::Error> for Error {
    fn from(e: berth_network::Error) -> Error {
        Error::msg(e.to_string())
    }
}

impl From<berth_storage::Error> for Error {
    fn from(e: berth_storage::Error) -> Error {
        Error::msg(e.message().to_string())
    }
}

pub trait Context<T> {
    fn ctx(self, c: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, c: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::msg(format!("{c}: {e}")))
    }
}

macro_rules! bail {
    ($kind:ident, $($t:tt)*) => { return Err($crate::error::Error::new($crate::error::Kind::$kind, format!($($t)*))) };
}
pub(crate) use bail;
