//! The layer every berth crate builds on, with libc as its only dependency (the monitor's size
//! is measured): one error type for the whole stack, and what the kernel offers that std does
//! not wrap.

pub mod error;
pub mod proc;

pub use error::{strerror, Context, Error, Kind, Result};
