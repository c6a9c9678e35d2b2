//! Real callers of berth-oci, set up privately: podman (with conmon) and containerd (with its runc
//! shim), each with its own root, state, configuration and sockets in a directory of ours, and
//! the busybox image as an OCI archive both can import. The callers tests and the podman
//! benchmark use them; the host's own podman and containerd state is never read or written.
//!
//! Two paths stay fixed in these callers whatever the configuration: the runtime's default state
//! root (podman 4.3 passes `--runtime-flag`s to `create` but not to the `delete` its cleanup
//! process runs, so the runtime must keep its default root, `/run/berth-oci`, like runc's
//! `/run/runc`), and containerd 1.6's shim sockets (`/run/containerd/s/`). Callers of this module
//! run them in a private mount namespace with a tmpfs on /run (`private_run`).

use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::image::{busybox_layer, Compression, Layer, OciLayout};

/// Writes the busybox image as an OCI archive (an OCI image layout in a tar) naming it `name`
/// (e.g. `localhost/busybox:latest`): `podman load -i` and `ctr images import` both take it.
pub fn busybox_oci_archive(scratch: &Path, dest: &Path, name: &str) -> io::Result<()> {
    let layout_dir = scratch.join("busybox-oci-layout");
    if layout_dir.exists() {
        std::fs::remove_dir_all(&layout_dir)?;
    }
    let mut layout = OciLayout::create(&layout_dir)?;
    let layer = Layer { tar: busybox_layer(scratch)?, compression: Compression::Gzip };
    let config = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
    });
    let info = layout.image(&[layer], config, "amd64")?;
    layout.tag(name, &info.manifest_descriptor)?;
    let mut tar = tar::Builder::new(std::fs::File::create(dest)?);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", &layout_dir)?;
    tar.into_inner()?.sync_all()?;
    std::fs::remove_dir_all(&layout_dir)
}

/// Makes this process's mount namespace private, with empty tmpfs mounts on /run and /var/tmp
/// and /var/lib seen through an overlay whose upper layer is `scratch/varlib` (created here):
/// what the callers keep at fixed paths under /run and /var/tmp whatever their configuration
/// says (podman 4.3 unpacks an oci-archive in /var/tmp) stays ours and goes away with us, and
/// what they write under /var/lib (podman's blob-info cache in /var/lib/containers/cache) lands
/// in `scratch`. Must be called while the process has one
/// thread (unshare(CLONE_NEWNS) refuses a shared fs context). `unshield` undoes the overlay
/// before `scratch` is removed.
pub fn private_run(scratch: &Path) -> io::Result<()> {
    let (upper, work) = (scratch.join("varlib/upper"), scratch.join("varlib/work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let overlay = format!("lowerdir=/var/lib,upperdir={},workdir={}", upper.display(), work.display());
    let overlay = std::ffi::CString::new(overlay).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    mount(c"none", c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    mount(c"tmpfs", c"/run", Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(c"mode=755"))?;
    mount(c"tmpfs", c"/var/tmp", Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(c"mode=1777"))?;
    mount(c"overlay", c"/var/lib", Some(c"overlay"), 0, Some(&overlay))
        .map_err(|e| io::Error::other(format!("an overlay on /var/lib: {e}")))?;
    Ok(())
}

fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let fstype = fstype.map_or(std::ptr::null(), CStr::as_ptr);
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: mount(2) with NUL-terminated strings or nulls.
    if unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype, flags, data) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts the /var/lib overlay of `private_run` (its upper layer can then be removed).
pub fn unshield() {
    // SAFETY: umount2 of a static path.
    unsafe { libc::umount2(c"/var/lib".as_ptr(), libc::MNT_DETACH) };
}

/// A private podman: storage root, run root, temp dir, events log, network config and file
/// locks under `dir`, configured by its own containers.conf, storage.conf and registries.conf
/// (the host's /etc/containers files are not read, except the signature policy).
pub struct Podman {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub tmp: PathBuf,
}

impl Podman {
    pub fn setup(dir: &Path) -> io::Result<Podman> {
        let p = Podman {
            dir: dir.to_path_buf(),
            root: dir.join("root"),
            runroot: dir.join("runroot"),
            tmp: dir.join("tmp"),
        };
        for d in [&p.root, &p.runroot, &p.tmp, &dir.join("net")] {
            std::fs::create_dir_all(d)?;
        }
        let d = dir.display();
        // The ulimits: podman's defaults (nofile 1048576) exceed this host's hard limit and root
        // has no CAP_SYS_RESOURCE here. runtime_supports_json: podman passes `--log FILE
        // --log-format json` only to runtimes named here, and reads the error of a failed create
        // from that file.
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
lock_type = "file"
tmp_dir = "{d}/tmp"
image_copy_tmp_dir = "{d}/tmp"
volume_path = "{d}/root/volumes"
runtime_supports_json = ["berth-oci", "runc", "crun"]

[network]
network_config_dir = "{d}/net"
"#
            ),
        )?;
        std::fs::write(
            dir.join("storage.conf"),
            format!("[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n"),
        )?;
        std::fs::write(dir.join("registries.conf"), "unqualified-search-registries = []\n")?;
        Ok(p)
    }

    /// `podman` with this environment and `runtime` as its OCI runtime.
    pub fn command(&self, runtime: &Path) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            // conmon's console sockets and attach sockets' temp files
            .env("TMPDIR", &self.tmp)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(&self.tmp)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file", "--storage-driver", "overlay"])
            .arg("--runtime")
            .arg(runtime);
        cmd
    }

    /// The runtime log file podman passes with `--log` for a container (while it exists).
    pub fn runtime_log(&self, id: &str) -> PathBuf {
        self.runroot.join("overlay-containers").join(id).join("userdata/oci-log")
    }
}

/// A private containerd's configuration: root, state, gRPC and ttrpc sockets under `dir`, no
/// CRI, no snapshotters but overlayfs, no plugin that writes outside `dir` (the `opt` plugin
/// would create /opt/containerd).
pub struct Containerd {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub tmp: PathBuf,
}

impl Containerd {
    pub fn setup(dir: &Path) -> io::Result<Containerd> {
        let c = Containerd {
            dir: dir.to_path_buf(),
            config: dir.join("config.toml"),
            socket: dir.join("containerd.sock"),
            root: dir.join("root"),
            state: dir.join("state"),
            tmp: dir.join("tmp"),
        };
        std::fs::create_dir_all(&c.tmp)?;
        let disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.internal.v1.opt",
            "io.containerd.internal.v1.tracing",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.native",
            "io.containerd.snapshotter.v1.zfs",
        ];
        let list = disabled.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            &c.config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [{list}]\n\n[grpc]\n  address = \"{}\"\n\n[ttrpc]\n  address = \"{}.ttrpc\"\n",
                c.root.display(),
                c.state.display(),
                c.socket.display(),
                c.socket.display()
            ),
        )?;
        Ok(c)
    }

    /// The daemon's command line (the caller spawns it, and stops it by pid).
    pub fn daemon(&self) -> Command {
        let mut cmd = Command::new("containerd");
        // The shims inherit it: runc-process files of `exec` go to TMPDIR.
        cmd.env("TMPDIR", &self.tmp).arg("--config").arg(&self.config);
        cmd
    }

    /// `ctr` against this daemon, in `namespace`.
    pub fn ctr(&self, namespace: &str) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).arg("--namespace").arg(namespace);
        cmd
    }

    /// The task bundle the runc shim makes for a container (its `log.json` is the runtime's
    /// `--log`).
    pub fn bundle(&self, namespace: &str, id: &str) -> PathBuf {
        self.state.join("io.containerd.runtime.v2.task").join(namespace).join(id)
    }
}
