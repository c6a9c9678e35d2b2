//! berthd's streaming server (exec, attach, port-forward outside gRPC), being built: for now
//! the SPDY/3.1 codec its connections will speak. docs/streaming-notes.md gathers the protocols.

pub mod spdy;
