//! `berth build`: images from a Containerfile, built with the engine's store, snapshots and
//! runtime, without a daemon.

pub mod add;
pub mod builder;
pub mod container;
pub mod copy;
pub mod ignore;
pub mod layer;
pub mod parse;
mod steps;
pub mod words;

pub use builder::{build, BuildOptions, Built, PullPolicy};
pub use layer::Format;
