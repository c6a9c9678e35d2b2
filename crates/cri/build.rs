//! Compiles `proto/runtime/v1/api.proto` (the CRI v1 API) into Rust types, a tonic server and
//! a tonic client, without a `protoc` binary: protox parses the file in Rust, and the encoded
//! descriptor is also kept for `tests/descriptor.rs`, which checks it against crictl's.

use std::path::PathBuf;

use prost::Message;

fn main() {
    let proto = "runtime/v1/api.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let fds = match protox::compile([proto], ["proto"]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("berth-cri: cannot compile proto/{proto}: {e:?}");
            std::process::exit(1);
        }
    };
    let desc = out.join("runtime_v1.descriptor.bin");
    if let Err(e) = std::fs::write(&desc, fds.encode_to_vec()) {
        eprintln!("berth-cri: cannot write {}: {e}", desc.display());
        std::process::exit(1);
    }
    // No transport helpers (`connect(url)`): berthd serves a Unix socket it binds itself and
    // clients bring their own channel.
    if let Err(e) = tonic_prost_build::configure().build_transport(false).emit_rerun_if_changed(false).compile_fds(fds)
    {
        eprintln!("berth-cri: cannot generate code from proto/{proto}: {e}");
        std::process::exit(1);
    }
}
