//! One error type for the whole runtime: a kind callers can branch on, a message that says what
//! failed and where (the JSON path in config.json, the mount, the cgroup file), and the errno.

use std::fmt;
use std::io;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    /// The container, file or namespace asked for does not exist.
    NotFound,
    /// A container with this id exists already.
    AlreadyExists,
    /// The request or the bundle's config.json is invalid.
    InvalidInput,
    /// The operation does not fit the container's current state.
    InvalidState,
    /// A valid request this runtime does not implement, or this host cannot grant.
    Unsupported,
    /// A system call or I/O failed.
    System,
}

#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    errno: Option<i32>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), errno: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    pub fn state(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidState, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// An error from the current `errno`, with what was being done.
    pub fn last_os(message: impl Into<String>) -> Self {
        Error::from_io(io::Error::last_os_error()).context(message.into())
    }

    pub fn from_errno(errno: i32, message: impl Into<String>) -> Self {
        Error::from_io(io::Error::from_raw_os_error(errno)).context(message.into())
    }

    pub fn from_io(err: io::Error) -> Self {
        let errno = err.raw_os_error();
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::System,
        };
        let message = match errno {
            // The errno's text is added by Display; keep the message free of the
            // "(os error N)" suffix std adds.
            Some(_) => String::new(),
            None => err.to_string(),
        };
        Error { kind, message, errno }
    }

    /// Rebuilds an error received from another process (the container's init).
    pub fn from_parts(kind: ErrorKind, message: String, errno: Option<i32>) -> Self {
        Error { kind, message, errno }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes what was being done: `mounting proc on /proc: operation not permitted`.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = if self.message.is_empty() { what.to_string() } else { format!("{what}: {}", self.message) };
        self
    }

    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }
}

pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    // std renders "Operation not permitted (os error 1)"; callers want the text alone,
    // lower-cased as in the rest of the message.
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
        None => text,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(errno) if self.message.is_empty() => f.write_str(&strerror(errno)),
            Some(errno) => write!(f, "{}: {}", self.message, strerror(errno)),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::from_io(err)
    }
}

/// `.ctx("what was being done")` on results whose error converts into [`Error`].
pub trait Context<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
    fn with_ctx<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }

    fn with_ctx<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}
