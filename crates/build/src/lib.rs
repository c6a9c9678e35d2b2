//! `berth build`: images from a Containerfile, built with the engine's store, snapshots and
//! runtime, without a daemon.

pub mod copy;
pub mod ignore;
pub mod parse;
pub mod words;
