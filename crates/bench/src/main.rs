//! berth-bench: side-by-side measurements, printed as tables of medians, ranges and ratios.
//!
//!   berth-bench oci [--iterations N] [--runs N] NAME=PATH...
//!   berth-bench podman [--iterations N] NAME=PATH...
//!   berth-bench cri [--iterations N] [--concurrent N] [--memory-pods N] --image IMAGE
//!                   [--pull IMAGE]... [--cgroup-parent PATH] [--log-dir DIR] [--pid NAME=PID]...
//!                   NAME=unix:///SOCKET...
//!   berth-bench cri-streams --crictl PATH --image IMAGE [--iterations N] [--transfer-mb N]
//!                   [--cgroup-parent PATH] [--work-dir DIR] NAME=unix:///SOCKET...
//!   berth-bench kubelet --kubelet PATH --crictl PATH --node-ip IP --image IMAGE [--iterations N]
//!                   [--pods N] [--idle-secs N] [--cgroup-root PATH] [--work-dir DIR]
//!                   NAME=unix:///SOCKET@PID...
//!   berth-bench subreaper CMD [ARGS...]
//!
//! `oci`: for each OCI runtime (the first is the one the ratios are about): create + start +
//! wait + delete of /bin/true, and N sequential foreground `run`s; the peak RSS of the runtime
//! processes. `podman`: a container's lifecycle through podman with each runtime as its
//! `--runtime`. Runtimes take turns within each iteration, so drift on the machine hits all
//! alike. `cri`: CRI servers (berthd, containerd) through the same tonic client, RPC by RPC,
//! pods at once, and the memory of the server and its helpers with many pods running (see
//! cri.rs); `cri-streams`: exec and port-forward through each server's streaming server, as
//! crictl drives them (see cri_streams.rs); `kubelet`: the same kubelet on each server, static
//! pods started and deleted, its time in CRI calls, the server's CPU with many pods (see
//! kubelet.rs); `subreaper` runs a server so that its double-forked helpers stay its descendants.

mod cri;
mod cri_streams;
mod kubelet;
mod measure;
mod oci;
mod podman;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("oci") => oci::main(&args[1..]),
        Some("podman") => podman::main(&args[1..]),
        Some("cri") => cri::main(&args[1..]),
        Some("cri-streams") => cri_streams::main(&args[1..]),
        Some("kubelet") => kubelet::main(&args[1..]),
        Some("subreaper") => cri::subreaper(&args[1..]),
        _ => Err("usage: berth-bench oci [--iterations N] [--runs N] NAME=PATH...\n       berth-bench podman [--iterations N] NAME=PATH...\n       berth-bench cri [--iterations N] --image IMAGE [--pid NAME=PID]... NAME=unix:///SOCKET...\n       berth-bench cri-streams --crictl PATH --image IMAGE NAME=unix:///SOCKET...\n       berth-bench subreaper CMD [ARGS...]".to_string()),
    };
    if let Err(e) = result {
        eprintln!("berth-bench: {e}");
        std::process::exit(1);
    }
}
