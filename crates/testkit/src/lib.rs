//! Test support shared by berth's tests, demo and benchmarks: a deterministic busybox root
//! filesystem from Debian's busybox-static, OCI bundles around it, test images and registries,
//! and the one harness the integration suites share (the reaper of what they spawn, waiting
//! and asserting, terminals, what they look at on the host, the leak check that ends them).

pub mod bundle;
pub mod callers;
pub mod check;
pub mod children;
pub mod host;
pub mod image;
pub mod init;
pub mod leaks;
pub mod network;
pub mod registry;
pub mod rootfs;
pub mod terminal;

use std::path::PathBuf;

pub use bundle::Bundle;
pub use rootfs::build_busybox_rootfs;

/// The workspace's root directory (the one all its crates, this one among them, are in).
pub fn workspace_root() -> PathBuf {
    let testkit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().and_then(|crates| crates.parent()).expect("crates/testkit in a workspace").to_path_buf()
}

/// The integration suites' test list: `trials![module::name, ...]` makes one libtest-mimic
/// trial per test function, named `module::name`. (The suite crate depends on libtest-mimic.)
#[macro_export]
macro_rules! trials {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$(::libtest_mimic::Trial::test(concat!(stringify!($module), "::", stringify!($name)), || {
            $module::$name();
            Ok(())
        })),*]
    };
}
