//! The store on its own (no registry): the privacy of its tree, how names and IDs resolve,
//! and the content store's ingest locking.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_image::{Config, Store};

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Whether user nobody (65534) can reach `p` (stat it: every directory above is searchable).
fn nobody_can_reach(p: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("stat").arg(p).uid(65534).gid(65534).output().unwrap().status.success()
}

#[test]
fn store_tree_is_private_even_when_it_existed() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // A store as an older berth left it: everything world-readable, a setuid binary in a layer.
    let root = tmp.path().join("root");
    drop(Store::open(&root, Config::default()).unwrap());
    let layer = root.join("layers").join("ab".repeat(32));
    fs::create_dir_all(layer.join("bin")).unwrap();
    for d in ["content/blobs/sha256", "snapshots/c1/rootfs"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let suid = layer.join("bin/su");
    fs::write(&suid, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let blob = root.join("content/blobs/sha256").join("cd".repeat(32));
    fs::write(&blob, b"blob").unwrap();
    for d in ["", "layers", "content", "snapshots"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(nobody_can_reach(&suid), "the test needs a readable store to start with");

    let store = Store::open(&root, Config::default()).unwrap();
    assert_eq!(mode(&root), 0o711, "store root");
    for d in ["content", "layers"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}/");
    }
    // Snapshots are traversable, each of them private (it was 0755 inside a 0700 directory).
    assert_eq!(mode(&root.join("snapshots")), 0o711, "snapshots/");
    assert_eq!(mode(&root.join("snapshots/c1")), 0o700, "snapshots/c1/");
    assert_eq!(mode(&root.join("berth.db")) & 0o077, 0, "berth.db");
    for p in [&suid, &blob, &root.join("snapshots/c1/rootfs")] {
        assert!(!nobody_can_reach(p), "{} is reachable by other users", p.display());
    }
    drop(store);
    // A new store is private from the start.
    let fresh = tmp.path().join("fresh");
    Store::open(&fresh, Config::default()).unwrap();
    assert_eq!(mode(&fresh), 0o711);
    assert_eq!(mode(&fresh.join("layers")), 0o700);
}

/// Imports a one-layer image holding `file`, tagged `name`; returns its ID.
fn import(store: &Store, dir: &Path, file: &str, name: &str) -> berth_image::Digest {
    use berth_testkit::image::{compress, Compression, LayerBuilder};
    let mut b = LayerBuilder::new();
    b.file(file, 0o644, file.as_bytes());
    let path = dir.join(format!("{file}.tar.gz"));
    fs::write(&path, compress(&b.finish(), Compression::Gzip)).unwrap();
    berth_image::archive::import(store, &path, Some(name)).unwrap()
}

#[test]
fn names_resolve_before_id_prefixes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root"), Config::default()).unwrap();
    let a = import(&store, tmp.path(), "a", "localhost/a:1");
    let b = import(&store, tmp.path(), "b", "localhost/b:1");
    let prefix = b.hex()[..12].to_string();
    // Another image named like b's ID prefix: the name wins, as in Docker.
    let img_a = store.resolve("localhost/a:1").unwrap();
    let tag = store.tag(&img_a, &prefix).unwrap();
    assert_eq!(tag, format!("docker.io/library/{prefix}:latest"));
    assert_eq!(store.resolve(&prefix).unwrap().id(), a);
    let out = store.remove_image(&prefix, false).unwrap();
    assert_eq!(out, vec![format!("Untagged: {tag}")], "rmi {prefix} removed the wrong thing");
    assert_eq!(store.list().unwrap().len(), 2, "rmi {prefix} removed an image");
    // Without such a name, the prefix is an ID again; sha256:... and 64 hex digits only ever are.
    assert_eq!(store.resolve(&prefix).unwrap().id(), b);
    assert_eq!(store.resolve(&format!("sha256:{}", &b.hex()[..8])).unwrap().id(), b);
    assert_eq!(store.resolve(b.hex()).unwrap().id(), b);
    assert_eq!(store.resolve(b.as_str()).unwrap().id(), b);
    let err = store.resolve("sha256:ffffffffffff").err().unwrap().to_string();
    assert!(err.contains("not found"), "{err}");
    let err = store.resolve("nothing-here").err().unwrap().to_string();
    assert!(err.contains("not found"), "{err}");
}

/// Waits until a thread of this process is blocked in flock on the file `inode`.
fn wait_for_blocked_flock(inode: u64) {
    let pid = std::process::id().to_string();
    let mut locks = String::new();
    let blocked = berth_testkit::check::poll_until(std::time::Duration::from_secs(60), || {
        locks = fs::read_to_string("/proc/locks").unwrap();
        locks.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"->")
                && f.contains(&"FLOCK")
                && f.contains(&pid.as_str())
                && f.iter().any(|x| x.rsplit(':').next() == Some(&inode.to_string()))
        })
    });
    assert!(blocked, "no blocked flock appeared:\n{locks}");
}

#[test]
fn ingest_waiting_for_a_discarded_download_starts_a_new_one() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root"), Config::default()).unwrap();
    let right = b"the right content";
    let d = berth_image::Digest::of(right);
    let mut first = store.content.ingest(&d, Some(right.len() as u64)).unwrap().unwrap();
    first.append(b"the wrong content").unwrap();
    let data = store.root.join("content/ingest").join(d.hex()).join("data");
    let inode = fs::metadata(&data).unwrap().ino();
    std::thread::scope(|s| {
        // A second writer of the same blob waits for the first one's lock...
        let second = s.spawn(|| {
            let mut i = store.content.ingest(&d, Some(right.len() as u64)).unwrap().expect("blob already there");
            i.reset().unwrap();
            i.append(right).unwrap();
            i.commit(&store.content)
        });
        wait_for_blocked_flock(inode);
        // ...which gives up on a digest mismatch, removing its files: the waiter must not go
        // on writing into the unlinked file it had opened.
        let err = first.commit(&store.content).unwrap_err().to_string();
        assert!(err.contains("digest mismatch"), "{err}");
        let got = second.join().unwrap().unwrap();
        assert_eq!(got, d);
    });
    assert_eq!(store.content.read(&d).unwrap(), right);
}

/// What `Store::open` says about the store at `root` (which must not open).
fn open_error(root: &Path) -> String {
    match Store::open(root, Config::default()) {
        Ok(_) => panic!("the store opened over a damaged database"),
        Err(e) => e.to_string(),
    }
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn damaged_database_beside_content_stops_the_store_and_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let store = Store::open(&root, Config::default()).unwrap();
    let id = import(&store, tmp.path(), "precious", "localhost/precious:1");
    drop(store);
    let db = root.join("berth.db");
    let good = fs::read(&db).unwrap();
    assert!(good.len() >= 3 * 4096, "the test needs a database of several pages ({} bytes)", good.len());
    let (blobs, layers) = (count(&root.join("content/blobs/sha256")), count(&root.join("layers")));
    assert!(blobs >= 3 && layers == 1, "{blobs} blobs, {layers} layers");
    let mut garbage = good.clone();
    garbage[..16].copy_from_slice(b"not sqlite at al");
    let mut corrupt = good.clone();
    corrupt[4096..8192].fill(0xff);
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("empty", Some(Vec::new()), "is empty (0 bytes)"),
        ("truncated", Some(good[..good.len() / 2].to_vec()), "cannot be read as a database"),
        ("truncated inside its header", Some(good[..10].to_vec()), "is truncated"),
        ("not SQLite", Some(garbage), "is not an SQLite database"),
        ("corrupt page", Some(corrupt), "integrity check"),
        ("missing", None, "is missing"),
    ];
    for (what, bytes, says) in cases {
        match &bytes {
            Some(b) => fs::write(&db, b).unwrap(),
            None => fs::remove_file(&db).unwrap(),
        }
        for attempt in 0..2 {
            let err = open_error(&root);
            for part in [db.to_string_lossy().as_ref(), says, "refusing to start a new database", "blobs", "1 layer"] {
                assert!(err.contains(part), "{what} (attempt {attempt}): {part:?} missing from: {err}");
            }
            assert!(err.contains("Recovering the metadata database"), "{what}: no pointer to the procedure: {err}");
            match &bytes {
                Some(b) => assert_eq!(&fs::read(&db).unwrap(), b, "{what}: berth.db was rewritten"),
                None => assert!(!db.exists(), "{what}: a new berth.db was made"),
            }
            assert_eq!(count(&root.join("content/blobs/sha256")), blobs, "{what}: blobs were removed");
            assert_eq!(count(&root.join("layers")), layers, "{what}: layers were removed");
        }
    }
    // The good database back: everything is there again.
    fs::write(&db, &good).unwrap();
    let store = Store::open(&root, Config::default()).unwrap();
    assert_eq!(store.resolve("localhost/precious:1").unwrap().id(), id);
}

#[test]
fn containers_or_volumes_alone_make_a_store_that_is_not_new() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["containers/0123456789ab", "volumes/data"] {
        let root = tmp.path().join(dir.replace('/', "-"));
        fs::create_dir_all(root.join(dir)).unwrap();
        fs::write(root.join("berth.db"), b"").unwrap();
        let err = open_error(&root);
        assert!(err.contains("is empty (0 bytes)") && err.contains(dir.split('/').next().unwrap()), "{err}");
        assert_eq!(fs::metadata(root.join("berth.db")).unwrap().len(), 0);
    }
}

#[test]
fn new_store_database_is_made_aside_then_renamed_into_place() {
    let tmp = tempfile::tempdir().unwrap();
    // What a set-up that crashed half-way left: an empty berth.db (as earlier versions made
    // it before filling it) and a temporary file of ours. The store holds nothing yet.
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("layers")).unwrap();
    fs::write(root.join("berth.db"), b"").unwrap();
    fs::write(root.join("berth.db-wal"), b"stale").unwrap();
    fs::write(root.join(".berth.db.tmp-1-0011223344556677"), b"half made").unwrap();
    let store = Store::open(&root, Config::default()).unwrap();
    assert!(store.list().unwrap().is_empty());
    drop(store);
    let names: Vec<String> =
        fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "leftovers: {names:?}");
    let db = fs::read(root.join("berth.db")).unwrap();
    assert!(db.starts_with(b"SQLite format 3\0") && db.len() >= 4096, "{} bytes", db.len());
    assert_eq!(mode(&root.join("berth.db")), 0o600);
    assert_eq!(mode(&root.join("store.lock")), 0o600, "store.lock");
    // Processes opening a new store at once all get the one database.
    let fresh = tmp.path().join("fresh");
    std::thread::scope(|s| {
        let opens: Vec<_> = (0..4).map(|_| s.spawn(|| Store::open(&fresh, Config::default()).map(drop))).collect();
        for o in opens {
            o.join().unwrap().unwrap();
        }
    });
    let store = Store::open(&fresh, Config::default()).unwrap();
    import(&store, tmp.path(), "f", "localhost/f:1");
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn store_files_are_private_to_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let store = Store::open(&root, Config::default()).unwrap();
    import(&store, tmp.path(), "private", "localhost/private:1");
    let _ingest = store.content.ingest(&berth_image::Digest::of(b"pending"), Some(7)).unwrap().unwrap();
    let _lock = store.lock_shared().unwrap();
    // While the store is open: the database, its WAL and shared memory, the lock.
    for f in ["berth.db", "berth.db-wal", "berth.db-shm", "store.lock"] {
        assert_eq!(mode(&root.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&root), 0o711);
    for d in ["content", "layers"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}/");
    }
    assert_eq!(mode(&root.join("snapshots")), 0o711);
    // Blobs and downloads are the owner's only, whatever the directories around them.
    let mut files = 0;
    let mut stack = vec![root.join("content")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(md.permissions().mode() & 0o077, 0, "{} is {:o}", p.display(), md.permissions().mode());
                files += 1;
            }
        }
    }
    assert!(files >= 4, "{files} files under content/");
}
