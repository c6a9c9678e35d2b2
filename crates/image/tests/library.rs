//! The image library as the CLI and the CRI server use it: pull through the Rust API,
//! container root filesystems over the pulled layers (overlay and copy), and image config →
//! runtime spec defaults with users resolved inside the image.

use std::fs;
use std::path::Path;

use berth_image::auth::AuthFile;
use berth_image::pull::{pull, NoProgress, PullOptions};
use berth_image::spec::{runtime_defaults, Overrides};
use berth_image::{Config, Store};
use berth_testkit::host::{is_mounted, UnmountOnDrop};
use berth_testkit::image::build_fixtures;
use berth_testkit::registry::{skopeo_push, Registry};

fn config(driver: &str) -> Config {
    Config::parse(&format!("[storage]\ndriver = \"{driver}\"\n"), Path::new("test")).unwrap()
}

/// The merged view of the `multi` fixture: whiteouts hide, opaque directories replace.
fn check_merged_view(rootfs: &Path) {
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(!rootfs.join("etc/shadowed").exists(), "whiteout did not hide etc/shadowed");
    assert!(!rootfs.join("opt/old").exists(), "whiteout did not hide opt/old");
    let mut cache: Vec<String> = fs::read_dir(rootfs.join("var/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cache.sort();
    assert_eq!(cache, vec!["c"], "opaque directory did not hide the lower entries");
    assert_eq!(fs::read_to_string(rootfs.join("etc/layer2")).unwrap(), "layer 2\n");
    assert_eq!(fs::read_to_string(rootfs.join("zstd/hello")).unwrap(), "hello from a zstd layer\n");
    assert_eq!(fs::read_to_string(rootfs.join("data/link")).unwrap(), "linked content\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(rootfs.join("data/hard1")).unwrap().ino(),
        fs::metadata(rootfs.join("data/hard2")).unwrap().ino()
    );
}

#[test]
fn library_pull_snapshots_and_runtime_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountOnDrop(tmp.path().to_path_buf());
    let registry = Registry::start(&tmp.path().join("registry"), None).unwrap();
    let fx = build_fixtures(&tmp.path().join("fx")).unwrap();
    let name = format!("{}/lib/multi:v1", registry.addr());
    skopeo_push(&fx.layout, "multi", &name, false, None, None).unwrap();
    let auth = AuthFile::at(&tmp.path().join("auth.json"));

    for driver in ["overlay", "copy"] {
        let store = Store::open(&tmp.path().join(format!("root-{driver}")), config(driver)).unwrap();
        let pulled =
            pull(&store, &name, &PullOptions { platform: None, auth: &auth, credentials: None, progress: &NoProgress })
                .unwrap();
        assert_eq!(pulled.image_id.as_str(), fx.multi.config_digest);
        let img = store.resolve(&name).unwrap();
        let rootfs = store.create_snapshot("ctr-1", &img).unwrap();
        assert_eq!(is_mounted(&rootfs), driver == "overlay");
        check_merged_view(&rootfs);

        // Writes go to the container's own upper layer (or copy), never to the shared layers.
        fs::write(rootfs.join("etc/written"), b"container data").unwrap();
        fs::remove_file(rootfs.join("etc/layer2")).unwrap();
        for dir in store.layer_dirs(&img).unwrap() {
            assert!(!dir.join("etc/written").exists());
        }
        let second = store.create_snapshot("ctr-2", &img).unwrap();
        assert!(second.join("etc/layer2").exists() && !second.join("etc/written").exists());

        // The image is kept while snapshots use it.
        let err = store.remove_image(&name, false).unwrap_err().to_string();
        assert!(err.contains("in use by container snapshot") && err.contains("ctr-1"), "{err}");
        assert!(store.prune(true).unwrap().images.is_empty());
        let err = store.create_snapshot("ctr-1", &img).unwrap_err().to_string();
        assert!(err.contains("ctr-1"), "{err}");
        let err = store.create_snapshot("../escape", &img).unwrap_err().to_string();
        assert!(err.contains("invalid snapshot id"), "{err}");

        // Runtime defaults: the user is resolved through the image's own /etc/passwd and
        // /etc/group (user is uid 1000, gid 1000, member of wheel (10) and audio (29)).
        let (_, cfg) = store.image_config(&img).unwrap();
        let d = runtime_defaults(&cfg, &rootfs, &Overrides::default()).unwrap();
        assert_eq!(d.args, vec!["/bin/sh", "-c", "echo hello"]);
        assert_eq!(d.env, vec!["PATH=/usr/bin:/bin", "GREETING=hi"]);
        assert_eq!(d.cwd, "/home/user");
        assert_eq!((d.uid, d.gid, d.additional_gids.clone()), (1000, 1000, vec![10, 29]));
        assert_eq!(d.exposed_ports, vec!["8080/tcp"]);
        assert_eq!(d.volumes, vec!["/data"]);
        assert_eq!(d.labels.get("org.example.test").map(String::as_str), Some("berth"));
        assert_eq!(d.stop_signal, libc::SIGQUIT);
        let o = Overrides {
            cmd: Some(vec!["id".into()]),
            user: Some("nobody:audio".into()),
            env: vec!["GREETING=hello".into()],
            ..Default::default()
        };
        let d2 = runtime_defaults(&cfg, &rootfs, &o).unwrap();
        assert_eq!(d2.args, vec!["/bin/sh", "-c", "id"]);
        assert_eq!((d2.uid, d2.gid), (65534, 29));
        assert!(d2.env.contains(&"GREETING=hello".to_string()) && !d2.env.contains(&"GREETING=hi".to_string()));
        let o =
            Overrides { entrypoint: Some(vec!["/bin/true".into()]), user: Some("4242".into()), ..Default::default() };
        let d3 = runtime_defaults(&cfg, &rootfs, &o).unwrap();
        assert_eq!(d3.args, vec!["/bin/true"], "an entrypoint override drops the image's Cmd");
        assert_eq!((d3.uid, d3.gid), (4242, 0));
        let err = runtime_defaults(&cfg, &rootfs, &Overrides { user: Some("ghost".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("ghost") && err.contains("/etc/passwd"), "{err}");

        // /etc/passwd is read inside the image even through an absolute symlink.
        fs::remove_file(rootfs.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd.image", rootfs.join("etc/passwd")).unwrap();
        fs::write(rootfs.join("etc/passwd.image"), "app:x:777:778::/:/bin/sh\n").unwrap();
        let d4 =
            runtime_defaults(&cfg, &rootfs, &Overrides { user: Some("app".into()), ..Default::default() }).unwrap();
        assert_eq!((d4.uid, d4.gid), (777, 778));

        // Applied to a runtime spec.
        let mut spec = oci_spec::runtime::Spec::default();
        d.apply(&mut spec).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap()[2], "echo hello");
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![10, 29]);
        assert_eq!(p.cwd().to_str(), Some("/home/user"));
        assert_eq!(spec.annotations().as_ref().unwrap().get("org.example.test").map(String::as_str), Some("berth"));

        // After an unmount (a reboot), the snapshot mounts again with its upper layer intact.
        store.snapshots.unmount("ctr-1").unwrap();
        assert!(!is_mounted(&rootfs));
        let again = store.mount_snapshot("ctr-1").unwrap();
        assert_eq!(again, rootfs);
        assert_eq!(is_mounted(&rootfs), driver == "overlay");
        assert_eq!(fs::read(rootfs.join("etc/written")).unwrap(), b"container data");
        assert!(!rootfs.join("etc/layer2").exists());

        store.remove_snapshot("ctr-1").unwrap();
        store.remove_snapshot("ctr-2").unwrap();
        assert!(!is_mounted(&rootfs));
        store.remove_image(&name, false).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(store.layers.list().unwrap().is_empty());
    }
}
