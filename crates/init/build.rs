// berth-init runs inside containers whose root filesystem has no C library or dynamic loader:
// it is linked without one (its own _start, raw system calls), statically.
fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie", "-Wl,--gc-sections"] {
        println!("cargo:rustc-link-arg-bin=berth-init={arg}");
    }
}
