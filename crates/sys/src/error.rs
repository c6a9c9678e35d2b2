//! One error type for every berth crate: a kind callers branch on (the CLI's exit codes, the
//! CRI server's gRPC codes), a message that reads as a path of context (`creating the
//! container: mounts[1]: tmpfs option 'sizee=1m': invalid argument`), and the errno when a
//! system call failed. Context added on the way up keeps the kind and the errno.

use std::fmt;
use std::io;

/// What kind of failure: what a caller can do about it, not where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The container, image, volume, file or namespace asked for does not exist.
    NotFound,
    /// What was to be created exists already (a name in use, a container id).
    AlreadyExists,
    /// The request, a configuration or an input file is invalid.
    InvalidInput,
    /// The request does not fit the current state (a running container's removal, a start of
    /// a container still being created).
    InvalidState,
    /// A name or id prefix that matches more than one thing.
    Ambiguous,
    /// A valid request this code does not implement, or this host cannot grant.
    Unsupported,
    /// Credentials refused or missing (a registry's 401/403), or a privilege this process lacks.
    PermissionDenied,
    /// A peer did not answer or went away (a registry, a plugin); trying again may work.
    Unavailable,
    /// A deadline passed.
    DeadlineExceeded,
    /// A limit was reached: disk space, an image's size, a count.
    ResourceExhausted,
    /// Content is not what it claims (a digest mismatch) or stored records are damaged.
    DataLoss,
    /// A system call or I/O failed, or anything else.
    System,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::NotFound,
        Kind::AlreadyExists,
        Kind::InvalidInput,
        Kind::InvalidState,
        Kind::Ambiguous,
        Kind::Unsupported,
        Kind::PermissionDenied,
        Kind::Unavailable,
        Kind::DeadlineExceeded,
        Kind::ResourceExhausted,
        Kind::DataLoss,
        Kind::System,
    ];

    /// A stable name, for errors that cross a process boundary (the runtime's sync socket).
    pub fn name(self) -> &'static str {
        match self {
            Kind::NotFound => "not-found",
            Kind::AlreadyExists => "already-exists",
            Kind::InvalidInput => "invalid-input",
            Kind::InvalidState => "invalid-state",
            Kind::Ambiguous => "ambiguous",
            Kind::Unsupported => "unsupported",
            Kind::PermissionDenied => "permission-denied",
            Kind::Unavailable => "unavailable",
            Kind::DeadlineExceeded => "deadline-exceeded",
            Kind::ResourceExhausted => "resource-exhausted",
            Kind::DataLoss => "data-loss",
            Kind::System => "system",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind an errno stands for, where it says more than "a system call failed".
    pub fn of_errno(errno: i32) -> Kind {
        match errno {
            libc::ENOENT | libc::ESRCH | libc::ENXIO | libc::ENODEV => Kind::NotFound,
            libc::EEXIST => Kind::AlreadyExists,
            libc::EACCES | libc::EPERM => Kind::PermissionDenied,
            libc::ENOSPC | libc::EDQUOT | libc::ENOMEM | libc::EMFILE | libc::ENFILE => Kind::ResourceExhausted,
            libc::ETIMEDOUT => Kind::DeadlineExceeded,
            libc::ENOSYS | libc::EOPNOTSUPP => Kind::Unsupported,
            _ => Kind::System,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    kind: Kind,
    message: String,
    errno: Option<i32>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), errno: None }
    }

    /// An error of no particular kind.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::new(Kind::System, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(Kind::InvalidInput, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(Kind::Unsupported, message)
    }

    pub fn state(message: impl Into<String>) -> Self {
        Error::new(Kind::InvalidState, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(Kind::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Error::new(Kind::AlreadyExists, message)
    }

    /// An error from the current `errno`, with what was being done.
    pub fn last_os(message: impl Into<String>) -> Self {
        Error::from_io(io::Error::last_os_error()).context(message.into())
    }

    pub fn from_errno(errno: i32, message: impl Into<String>) -> Self {
        Error::from_io(io::Error::from_raw_os_error(errno)).context(message.into())
    }

    /// An I/O error: its errno kept (its text is added by Display), its kind from the errno.
    pub fn from_io(err: io::Error) -> Self {
        let errno = err.raw_os_error();
        let kind = match errno {
            Some(e) => Kind::of_errno(e),
            None if err.kind() == io::ErrorKind::NotFound => Kind::NotFound,
            None if err.kind() == io::ErrorKind::TimedOut => Kind::DeadlineExceeded,
            None if err.kind() == io::ErrorKind::InvalidData => Kind::InvalidInput,
            None => Kind::System,
        };
        let message = match errno {
            // Display adds the errno's text; std's "(os error N)" is left out.
            Some(_) => String::new(),
            None => err.to_string(),
        };
        Error { kind, message, errno }
    }

    /// Any error: ours as it is, an I/O error with its errno, anything else by its text.
    pub fn from_std<E: std::error::Error + Send + Sync + 'static>(err: E) -> Self {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
        match boxed.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => match other.downcast::<io::Error>() {
                Ok(io) => Error::from_io(*io),
                Err(other) => Error::msg(other.to_string()),
            },
        }
    }

    /// Rebuilds an error received from another process.
    pub fn from_parts(kind: Kind, message: String, errno: Option<i32>) -> Self {
        Error { kind, message, errno }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The context without the errno's text (see Display for the whole).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes what was being done: `mounting proc on /proc: operation not permitted`.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = if self.message.is_empty() { what.to_string() } else { format!("{what}: {}", self.message) };
        self
    }

    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind
    }
}

/// An errno's text, lower-cased to read as the rest of a message does.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
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

#[cfg(feature = "rusqlite")]
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        // A damaged database file is data loss, not a passing failure.
        let kind = match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => Kind::DataLoss,
            Some(rusqlite::ErrorCode::DiskFull) => Kind::ResourceExhausted,
            Some(rusqlite::ErrorCode::ConstraintViolation) => Kind::AlreadyExists,
            _ => Kind::System,
        };
        Error::new(kind, format!("metadata database: {err}"))
    }
}

#[cfg(feature = "serde_json")]
impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        let kind = if err.is_io() { Kind::System } else { Kind::InvalidInput };
        Error::new(kind, err.to_string())
    }
}

/// `.ctx("what was being done")` on any result: our errors keep their kind and errno, I/O
/// errors their errno, others their text.
pub trait Context<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
    fn with_ctx<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::from_std(e).context(what))
    }

    fn with_ctx<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::from_std(e).context(what()))
    }
}

/// `bail!(Kind, "format", args…)`: returns an error of that kind.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($t:tt)*) => {
        return Err($crate::Error::new($crate::Kind::$kind, format!($($t)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_kind_and_errno() {
        let e = Error::not_found("no such container: x").context("rm x");
        assert_eq!((e.kind(), e.to_string().as_str()), (Kind::NotFound, "rm x: no such container: x"));
        let r: std::result::Result<(), io::Error> = Err(io::Error::from_raw_os_error(libc::ENOENT));
        let e = r.ctx("/etc/x").unwrap_err().context("reading");
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert_eq!(e.to_string(), "reading: /etc/x: no such file or directory");
        let ours: Result<()> = Err(Error::new(Kind::Ambiguous, "prefix ab"));
        assert_eq!(ours.ctx("inspect").unwrap_err().kind(), Kind::Ambiguous);
        let other: std::result::Result<(), std::num::ParseIntError> = "x".parse::<i32>().map(|_| ());
        let e = other.ctx("--size").unwrap_err();
        assert_eq!((e.kind(), e.to_string().as_str()), (Kind::System, "--size: invalid digit found in string"));
    }

    #[test]
    fn kinds_by_name_and_errno() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_name("nope"), None);
        assert_eq!(Error::from_errno(libc::ENOSPC, "write").kind(), Kind::ResourceExhausted);
        assert_eq!(Error::from_errno(libc::EEXIST, "mkdir").kind(), Kind::AlreadyExists);
        assert_eq!(Error::from_errno(libc::EIO, "read").kind(), Kind::System);
    }
}
