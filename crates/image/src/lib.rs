//! berth's image library, shared by the CLI and the CRI server: the content store and the
//! metadata database, the OCI distribution client (pull, push, auth), image archives
//! (docker-archive, OCI layout), and image config → runtime spec defaults.

pub mod archive;
pub mod auth;
pub mod config;
pub mod content;
pub mod db;
pub mod error;
pub mod events;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod spec;
pub mod store;

pub use berth_storage::Digest;
pub use config::Config;
pub use error::{Error, Result};
pub use reference::Reference;
pub use store::{Image, Store};
