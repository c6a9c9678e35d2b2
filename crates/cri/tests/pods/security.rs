//! The security context and mounts as the CRI defines them (what critest checks, here with
//! berth's own assertions): the defaults of absent fields, the identity reported back, and
//! mount propagation to and from the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_cri::proto as pb;
use tonic::Code;

use crate::support::*;

fn security(c: &mut pb::ContainerConfig) -> &mut pb::LinuxContainerSecurityContext {
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap()
}

fn seccomp_mode(id: &str) -> String {
    let (_, out, _) = exec(id, &["grep", "^Seccomp:", "/proc/self/status"]);
    out.split_whitespace().nth(1).unwrap_or_default().to_string()
}

/// No seccomp field is unconfined (RuntimeDefault is asked for by name); no hostname is the
/// node's; the reported user is the identity the process has, primary group first.
pub fn absent_fields_mean_what_the_cri_says() {
    let mut cfg = pod_config("defaults");
    cfg.hostname = String::new();
    let pod = Pod::run(cfg);
    let plain = pod.start(container_config("plain", "exec sleep 1000"));
    assert_eq!(seccomp_mode(&plain), "0", "a container without a seccomp field is filtered");
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(exec(&plain, &["hostname"]).1.trim(), node.trim(), "a pod without a hostname");

    let mut c = container_config("confined", "exec sleep 1000");
    security(&mut c).seccomp = Some(pb::SecurityProfile::default());
    let confined = pod.start(c);
    assert_eq!(seccomp_mode(&confined), "2", "RuntimeDefault is not a filter");

    let mut c = container_config("identity", "exec sleep 1000");
    let sc = security(&mut c);
    sc.run_as_user = Some(pb::Int64Value { value: 1000 });
    sc.run_as_group = Some(pb::Int64Value { value: 2000 });
    sc.supplemental_groups = vec![1234];
    let id = pod.start(c);
    let user = status(&id).user.and_then(|u| u.linux).expect("the container's user");
    assert_eq!((user.uid, user.gid, user.supplemental_groups), (1000, 2000, vec![2000, 1234]));
    assert_eq!(exec(&id, &["id", "-G"]).1.trim(), "2000 1234");
}

/// A tmpfs of the test's own at `dir`, shared or private.
struct TestMount(PathBuf);

impl TestMount {
    fn new(dir: PathBuf, shared: bool) -> TestMount {
        std::fs::create_dir_all(&dir).unwrap();
        let c = berth_sys::cstring(dir.as_os_str()).unwrap();
        let propagation = if shared { libc::MS_SHARED } else { libc::MS_PRIVATE };
        // SAFETY: mount(2) with valid C strings, on the test's own directory.
        unsafe {
            assert_eq!(libc::mount(c"tmpfs".as_ptr(), c.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()), 0);
            assert_eq!(libc::mount(std::ptr::null(), c.as_ptr(), std::ptr::null(), propagation, std::ptr::null()), 0);
        }
        TestMount(dir)
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        for m in berth_testkit::leaks::mounts_containing(&self.0.display().to_string()).iter().rev() {
            let c = berth_sys::cstring(Path::new(m).as_os_str()).unwrap();
            // SAFETY: umount2 of a mount under the test's own directory.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn bind(host: &Path, propagation: pb::MountPropagation) -> pb::Mount {
    pb::Mount {
        container_path: "/vol".into(),
        host_path: host.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// Bidirectional: what the container mounts under the volume appears on the host; a host
/// path on a private mount is refused for it, as is a recursive read-only mount that is not
/// read-only.
pub fn mount_propagation_and_its_refusals() {
    let pod = Pod::run(pod_config("propagation"));
    let create = |c: pb::ContainerConfig| {
        block(cri().runtime.create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(c),
            sandbox_config: Some(pod.config.clone()),
        }))
    };
    let private = TestMount::new(suite().dir.join(unique("private-mount")), false);
    let mut c = container_config(&unique("refused"), "true");
    c.mounts = vec![bind(&private.0, pb::MountPropagation::PropagationBidirectional)];
    let e = create(c).expect_err("bidirectional propagation from a private mount");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mounts[0]") && e.message().contains("shared"), "{}", e.message());
    let mut c = container_config(&unique("refused"), "true");
    c.mounts =
        vec![pb::Mount { recursive_read_only: true, ..bind(&private.0, pb::MountPropagation::PropagationPrivate) }];
    let e = create(c).expect_err("a recursive read-only mount that is not read-only");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mounts[0]"), "{}", e.message());

    let shared = TestMount::new(suite().dir.join(unique("shared-mount")), true);
    std::fs::create_dir(shared.0.join("sub")).unwrap();
    let mut c =
        container_config("bidirectional", "mount -t tmpfs ctr /vol/sub && touch /vol/sub/marker && exec sleep 1000");
    c.mounts = vec![bind(&shared.0, pb::MountPropagation::PropagationBidirectional)];
    security(&mut c).capabilities =
        Some(pb::Capability { add_capabilities: vec!["SYS_ADMIN".into()], ..Default::default() });
    let id = pod.start(c);
    wait_until("the container's mount to reach the host", Duration::from_secs(30), || {
        shared.0.join("sub/marker").exists()
    });
    let listed = status(&id).mounts;
    assert_eq!(listed[0].propagation, pb::MountPropagation::PropagationBidirectional as i32, "{listed:?}");
    drop(pod);
}

/// A privileged container has the host's devices (as containerd gives privileged pods), one
/// that is not among a container's defaults checked by its numbers; an unprivileged one does
/// not.
pub fn privileged_containers_get_the_hosts_devices() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let defaults = ["null", "zero", "full", "random", "urandom", "tty", "ptmx", "console"];
    let host_device = std::fs::read_dir("/dev").unwrap().flatten().find_map(|e| {
        let md = std::fs::symlink_metadata(e.path()).ok()?;
        let name = e.file_name().to_string_lossy().into_owned();
        let dev = md.file_type().is_char_device() || md.file_type().is_block_device();
        (dev && !defaults.contains(&name.as_str()) && !name.starts_with("tty")).then(|| {
            let kind = if md.file_type().is_char_device() { "character special file" } else { "block special file" };
            (name, format!("{kind} {:x} {:x}", libc::major(md.rdev()), libc::minor(md.rdev())))
        })
    });
    let Some((name, expected)) = host_device else {
        eprintln!(
            "SKIPPED privileged_containers_get_the_hosts_devices: this host's /dev has no device beyond the defaults"
        );
        return;
    };
    let mut cfg = pod_config("privileged");
    cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true;
    let pod = Pod::run(cfg);
    let mut c = container_config("privileged", "exec sleep 1000");
    security(&mut c).privileged = true;
    let id = pod.start(c);
    let (code, out, err) = exec(&id, &["stat", "-c", "%F %t %T", &format!("/dev/{name}")]);
    assert_eq!((code, out.trim()), (0, expected.as_str()), "/dev/{name} in a privileged container: {err}");
    let plain = pod.start(container_config("plain", "exec sleep 1000"));
    assert_ne!(exec(&plain, &["stat", &format!("/dev/{name}")]).0, 0, "/dev/{name} in an unprivileged container");
}

/// SELinux labels: applied where the host has SELinux, a clear refusal naming the field where
/// it has none (this VM); relabeling a volume, which kubelet asks for whatever the host, is
/// fine either way.
pub fn selinux_options_where_the_host_has_no_selinux() {
    let options = pb::SeLinuxOption {
        user: String::new(),
        role: String::new(),
        r#type: "spc_t".into(),
        level: "s0:c1,c2".into(),
    };
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    let mut cfg = pod_config("selinux");
    cfg.linux.as_mut().unwrap().security_context.get_or_insert_with(Default::default).selinux_options =
        Some(options.clone());
    if selinux {
        eprintln!("NOTE: this host has SELinux: the label is checked, not the refusal");
        let pod = Pod::run(cfg);
        let id = pod.start(container_config("labelled", "exec sleep 1000"));
        assert_eq!(
            exec(&id, &["cat", "/proc/self/attr/current"]).1.trim_end_matches('\0').trim(),
            "system_u:system_r:spc_t:s0:c1,c2"
        );
        return;
    }
    let e = block(
        cri().runtime.run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(cfg), runtime_handler: String::new() }),
    )
    .expect_err("a pod label without SELinux");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("config.linux.security_context.selinux_options")
            && e.message().contains("SELinux is not enabled"),
        "{e:?}"
    );

    let pod = Pod::run(pod_config("selinux-container"));
    let mut c = container_config("labelled", "exec sleep 1000");
    security(&mut c).selinux_options = Some(options);
    let e = block(cri().runtime.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(c),
        sandbox_config: Some(pod.config.clone()),
    }))
    .expect_err("a container label without SELinux");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("selinux_options"), "{e:?}");
    // A volume kubelet asks to relabel: nothing to relabel without SELinux.
    let vol = suite().dir.join("selinux-volume");
    std::fs::create_dir_all(&vol).unwrap();
    let mut c = container_config("relabel", "exec sleep 1000");
    c.mounts.push(pb::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        selinux_relabel: true,
        ..Default::default()
    });
    let id = pod.start(c);
    assert_eq!(exec(&id, &["ls", "-d", "/vol"]).0, 0);
}

fn image_mount(path: &str, sub_path: &str, readonly: bool) -> pb::Mount {
    pb::Mount {
        container_path: path.into(),
        readonly,
        image: Some(pb::ImageSpec { image: IMAGE.into(), ..Default::default() }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

/// Image volumes (a mount whose source is an image): the image's files, read-only but
/// executable, a sub path of it, its ID reported; the image cannot be removed under it; the
/// refusals (writable, a sub path that is missing or leads out) leave nothing behind, and the
/// volumes' snapshots go with the container.
pub fn image_volumes() {
    let pod = Pod::run(pod_config("image-volumes"));
    let mut c = container_config("with-image", "exec sleep 1000");
    c.mounts = vec![image_mount("/mnt/image", "", true), image_mount("/mnt/bin", "bin", true)];
    let id = pod.start(c);
    assert_eq!(exec(&id, &["ls", "/mnt/image/bin/busybox"]).0, 0);
    let (code, _, err) = exec(&id, &["touch", "/mnt/image/written"]);
    assert_ne!(code, 0, "an image volume is read-only");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(exec(&id, &["/mnt/image/bin/busybox", "true"]).0, 0, "its programs run (no noexec)");
    assert_eq!(exec(&id, &["ls", "/mnt/bin/busybox"]).0, 0, "the sub path is the mount's root");
    let image_id = block(cri().images.image_status(pb::ImageStatusRequest {
        image: Some(pb::ImageSpec { image: IMAGE.into(), ..Default::default() }),
        verbose: false,
    }))
    .unwrap()
    .into_inner()
    .image
    .unwrap()
    .id;
    let mounts = status(&id).mounts;
    let reported = mounts.iter().find(|m| m.container_path == "/mnt/image").expect("the image volume in the status");
    assert_eq!(reported.image.as_ref().map(|i| i.image_ref.as_str()), Some(image_id.as_str()));
    assert!(reported.readonly);
    let snapshots = || -> Vec<String> {
        std::fs::read_dir(suite().root.join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{id}-iv")))
            .collect()
    };
    assert_eq!(snapshots().len(), 2, "a snapshot per image volume");
    // The volumes' snapshots hold the image (the container's own would too: its image is the
    // same here, and the store refuses by snapshot).
    let e = block(cri().images.remove_image(pb::RemoveImageRequest {
        image: Some(pb::ImageSpec { image: IMAGE.into(), ..Default::default() }),
    }))
    .expect_err("an image in use");
    assert!(e.message().contains("in use"), "{e:?}");

    for (mount, code, field) in [
        (image_mount("/mnt/x", "", false), Code::InvalidArgument, "config.mounts[0].readonly"),
        (image_mount("/mnt/x", "../etc", true), Code::InvalidArgument, "config.mounts[0].image_sub_path"),
        (image_mount("/mnt/x", "not-existing", true), Code::NotFound, "sub path \"not-existing\""),
    ] {
        let mut c = container_config("refused-image", "true");
        c.mounts = vec![mount];
        let e = block(cri().runtime.create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(c),
            sandbox_config: Some(pod.config.clone()),
        }))
        .expect_err("a refused image volume");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(field), "{field}: {e:?}");
    }
    let listed = block(cri().runtime.list_containers(pb::ListContainersRequest {
        filter: Some(pb::ContainerFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() }),
    }))
    .unwrap()
    .into_inner()
    .containers;
    assert_eq!(listed.len(), 1, "a refused create leaves no container");
    // Nor an image volume's snapshot (the missing sub path is found after it was made); no
    // other test uses image volumes.
    let volume_snapshots: Vec<String> = std::fs::read_dir(suite().root.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-iv"))
        .collect();
    assert_eq!(volume_snapshots.len(), 2, "{volume_snapshots:?}");
    block(cri().runtime.remove_container(pb::RemoveContainerRequest { container_id: id.clone() })).unwrap();
    assert!(snapshots().is_empty(), "the image volumes' snapshots went with the container: {:?}", snapshots());
}
