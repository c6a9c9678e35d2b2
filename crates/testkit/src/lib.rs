//! Test support shared by berth's tests, demo and benchmarks: a deterministic busybox root
//! filesystem from Debian's busybox-static, and OCI bundles around it.

pub mod bundle;
pub mod callers;
pub mod children;
pub mod host;
pub mod image;
pub mod init;
pub mod leaks;
pub mod network;
pub mod registry;
pub mod rootfs;

pub use bundle::Bundle;
pub use rootfs::build_busybox_rootfs;

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
