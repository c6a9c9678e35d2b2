//! berth's container engine: the library the `berth` CLI and (later) the CRI server share.
//! Containers (create, start, stop, kill, rm, restart, wait, exec, logs, attach, cp, top,
//! stats), volumes and networks, runtime handlers, and the state machine, kept in the store's
//! SQLite database (`containers` table) beside the images, with per-container locks.
//!
//! ```text
//! <root>/containers/<id>/        bundle: config.json, hosts, hostname, resolv.conf, ctr.log
//! <root>/snapshots/<id>/rootfs   the container's root filesystem (berth-image's snapshots)
//! <root>/volumes/<name>/_data    named and anonymous volumes (+ volume.json)
//! <root>/networks/<name>.conflist  CNI configuration lists; <root>/networks/ipam/: addresses
//! <run>/containers/<id>/         monitor: attach socket, exit file, pid, runtime.log
//! <run>/netns/<id>               the container's pinned network namespace
//! <root>/cni/                    cached CNI results (for DEL, also after a reboot)
//! <run>/runtimes/<handler>/      each OCI runtime's own state root
//! <run>/locks/<id>               per-container flock
//! ```

pub mod attach;
pub mod config;
pub mod container;
pub mod cp;
pub mod error;
pub mod exec_stream;
pub mod logs;
pub mod networks;
pub mod oci;
pub mod runtime;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod stats;
pub mod time;
pub mod volumes;

use std::fs::File;
use std::path::{Path, PathBuf};

use berth_image::Store;
use rusqlite::{params, OptionalExtension};

pub use config::EngineConfig;
pub use container::{Container, ContainerConfig, State};
pub use error::{Error, Kind, Result};

use error::{bail, Context};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS containers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    record      TEXT NOT NULL
);
"#;

pub struct Engine {
    pub store: Store,
    pub config: EngineConfig,
    pub root: PathBuf,
    pub run_root: PathBuf,
    /// Where the engine's own configuration came from (passed to the exit command).
    pub config_path: Option<PathBuf>,
    /// The program (and its leading arguments) the monitor runs when a container exits:
    /// `<berth> --root R [--config C] container cleanup <id>`; the id is appended.
    pub exit_command: Option<Vec<String>>,
    /// Where pods find their network configuration (a CNI configuration directory, as
    /// berthd's `[cri] cni-conf-dir` says); None: the engine's default network.
    pub pod_cni_conf_dir: Option<PathBuf>,
}

/// A held per-object lock (a container's or a pod's), released on drop.
///
/// Its file exists only while someone holds it: the holder unlinks it before letting go,
/// so locks of removed objects leave nothing behind. A waiter that then gets the unlinked
/// file's lock sees that the path names another file (or none) and tries again.
pub struct Lock {
    path: PathBuf,
    _file: File,
}

impl Lock {
    /// Waits for the lock at `path` (`wait`), or takes it only if it is free (None if not).
    pub(crate) fn acquire(path: &Path, wait: bool) -> Result<Option<Lock>> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let f = File::options().create(true).truncate(false).write(true).open(path).ctx(path.display())?;
            let what = || format!("lock {}", path.display());
            if wait {
                berth_sys::file::lock_exclusive(&f).ctx(what())?;
            } else if !berth_sys::file::try_lock_exclusive(&f).ctx(what())? {
                return Ok(None);
            }
            let held = f.metadata().ctx(what())?;
            match std::fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(Lock { path: path.to_path_buf(), _file: f }))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx(what()),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Still held here: the file closes after this body.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Engine {
    /// Opens the store at `root` with the configuration file `config_path` (or the default).
    pub fn open(root: &Path, config_path: Option<&Path>) -> Result<Engine> {
        let cfg = berth_image::Config::load(config_path)?;
        let origin = config_path.map(|p| p.display().to_string()).unwrap_or_else(|| "berth.toml".into());
        let engine_cfg = EngineConfig::from_table(cfg.engine.as_ref(), &origin)?;
        let store = Store::open(root, cfg)?;
        let root = store.root.clone();
        let run_root = match &engine_cfg.run_root {
            Some(p) => p.clone(),
            None if root == Path::new(berth_image::store::DEFAULT_ROOT) => PathBuf::from("/run/berth"),
            None => root.join("run"),
        };
        // Bundles (the environment, i.e. secrets), logs, volumes (setuid files a container
        // wrote or an image brought), monitors' sockets and exit files: none of it is for
        // other local users. These directories are private whatever the umask, and set so
        // again at every open (stores made by earlier versions had them 0755).
        // The run root is the engine's own when it is the default, or inside the store.
        // The run root and the pods' directories are traversable (0711, not listable): a pod
        // with a user namespace of its own has its directories owned by its root, which must
        // reach them by path (an OCI runtime mounts its files as that user).
        make_dir(&run_root, engine_cfg.run_root.is_none() || run_root.starts_with(&root), 0o711)?;
        for d in ["containers", "netns", "locks", "runtimes"] {
            private_dir(&run_root.join(d))?;
        }
        for d in ["containers", "volumes", "networks", "cni"] {
            private_dir(&root.join(d))?;
        }
        move_cni_cache(&run_root.join("cni"), &root.join("cni"))?;
        for dir in [run_root.join("sandboxes"), root.join("sandboxes")] {
            make_dir(&dir, true, 0o711)?;
        }
        // What pods' reapers are chrooted to: nothing (searchable, not even listable).
        make_dir(&run_root.join("empty"), true, 0o111)?;
        store.db().conn.execute_batch(SCHEMA).ctx("metadata database: containers table")?;
        store.db().conn.execute_batch(sandbox::SCHEMA).ctx("metadata database: sandboxes table")?;
        Ok(Engine {
            store,
            config: engine_cfg,
            root,
            run_root,
            config_path: config_path.map(Path::to_path_buf),
            exit_command: None,
            pod_cni_conf_dir: None,
        })
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.run_root.join("containers").join(id)
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.run_root.join("netns").join(id)
    }

    /// The per-container (or per-pod) lock: start, stop, rm and cleanup of one container
    /// take turns.
    pub fn lock(&self, id: &str) -> Result<Lock> {
        let lock = Lock::acquire(&self.run_root.join("locks").join(id), true)?;
        Ok(lock.expect("a waiting lock is always taken"))
    }

    /// A container event in the store's event log (`berth events`).
    pub(crate) fn event(&self, c: &Container, action: &str, extra: &[(&str, &str)]) {
        let mut attrs: Vec<(&str, &str)> = vec![("name", &c.name), ("image", &c.image)];
        attrs.extend_from_slice(extra);
        berth_image::events::emit(&self.root, "container", action, &c.id, &attrs);
    }

    // ------------------------------------------------------------------ container records

    pub(crate) fn insert(&self, c: &Container) -> Result<()> {
        let rec = serde_json::to_string(c).ctx("serialize container")?;
        let clash = self.store.db().write(|tx| {
            let clash: Option<String> =
                tx.query_row("SELECT id FROM containers WHERE name = ?1", [&c.name], |r| r.get(0)).optional()?;
            if clash.is_none() {
                tx.execute(
                    "INSERT INTO containers (id, name, created_at, record) VALUES (?1, ?2, ?3, ?4)",
                    params![c.id, c.name, time::now_secs(), rec],
                )?;
            }
            Ok(clash)
        })?;
        match clash {
            Some(other) => bail!(
                AlreadyExists,
                "the container name {:?} is already in use by container {}: remove it or choose another name",
                c.name,
                &other[..12]
            ),
            None => Ok(()),
        }
    }

    pub(crate) fn save(&self, c: &Container) -> Result<()> {
        let rec = serde_json::to_string(c).ctx("serialize container")?;
        self.store.db().write(|tx| {
            tx.execute("UPDATE containers SET record = ?2 WHERE id = ?1", params![c.id, rec])?;
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn delete_record(&self, id: &str) -> Result<()> {
        self.store.db().write(|tx| {
            tx.execute("DELETE FROM containers WHERE id = ?1", [id])?;
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn load(&self, id: &str) -> Result<Option<Container>> {
        let rec: Option<String> = self
            .store
            .db()
            .conn
            .query_row("SELECT record FROM containers WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        match rec {
            Some(r) => {
                let c: Container = serde_json::from_str(&r).ctx(format!("container {id}: stored record"))?;
                Ok(Some(c.upgrade()))
            }
            None => Ok(None),
        }
    }

    /// All containers, newest first, as stored (see `list` for their current state).
    pub(crate) fn load_all(&self) -> Result<Vec<Container>> {
        let db = self.store.db();
        let mut st = db.conn.prepare("SELECT id, record FROM containers ORDER BY created_at DESC, id")?;
        let rows: Vec<(String, String)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|(id, r)| {
                serde_json::from_str::<Container>(&r)
                    .map(Container::upgrade)
                    .ctx(format!("container {id}: stored record"))
            })
            .collect()
    }

    /// A container by name, full id or unique id prefix.
    pub fn resolve_id(&self, name_or_id: &str) -> Result<String> {
        if name_or_id.is_empty() {
            bail!(InvalidInput, "empty container name or id");
        }
        let db = self.store.db();
        let by_name: Option<String> =
            db.conn.query_row("SELECT id FROM containers WHERE name = ?1", [name_or_id], |r| r.get(0)).optional()?;
        if let Some(id) = by_name {
            return Ok(id);
        }
        if name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let pattern = format!("{}%", name_or_id.to_ascii_lowercase());
            let mut st = db.conn.prepare("SELECT id FROM containers WHERE id LIKE ?1 LIMIT 3")?;
            let ids: Vec<String> = st.query_map([pattern], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            match ids.len() {
                1 => return Ok(ids[0].clone()),
                0 => {}
                _ => bail!(
                    Ambiguous,
                    "container id prefix {name_or_id:?} is ambiguous: it matches several containers ({}, ...)",
                    ids.iter().map(|i| &i[..12]).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        bail!(NotFound, "no such container: {name_or_id}")
    }
}

/// Creates `dir` (and its parents) 0700, and makes an existing one 0700 again.
/// Moves the CNI results earlier versions cached in the run directory (gone with a reboot)
/// to the store; the files are small, and the two may be on different filesystems.
fn move_cni_cache(old: &Path, new: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(old) else { return Ok(()) };
    for e in entries.flatten() {
        let target = new.join(e.file_name());
        if !target.exists() {
            let bytes = std::fs::read(e.path()).ctx(e.path().display())?;
            write_private(&target, &bytes)?;
        }
        std::fs::remove_file(e.path()).ctx(e.path().display())?;
    }
    let _ = std::fs::remove_dir(old);
    Ok(())
}

pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    make_dir(dir, true, 0o700)
}

/// Creates `dir` (and its parents) with `mode`; an existing directory keeps its mode unless
/// `correct` (a configured run root such as /run must not be changed).
fn make_dir(dir: &Path, correct: bool, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).ctx(dir.display())?;
    let meta = std::fs::symlink_metadata(dir).ctx(dir.display())?;
    if !meta.is_dir() {
        bail!(System, "{}: not a directory", dir.display());
    }
    if correct && meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).ctx(dir.display())?;
    }
    Ok(())
}

/// Writes a file only root may read (a bundle's config.json holds the container's
/// environment): created 0600, written aside and renamed into place.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).ctx(path.display());
    }
    Ok(())
}

/// Crash-recovery tests stop a berth command dead at a named point: with
/// `BERTH_TEST_CRASH_AT=<point>` in its environment, the process kills itself with SIGKILL
/// there (as `kill -9` would). Points: `created-record`, `snapshot`, `network`, `monitor` (in
/// `create`/`start`), `rm-network`, `rm-files` (in `rm`).
pub(crate) fn crash_point(name: &str) {
    if std::env::var_os("BERTH_TEST_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: killing ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// 64 random hex digits.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    // SAFETY: getrandom into a valid buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = time::now_nanos();
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 4)) as u8 ^ (std::process::id() >> (i % 4)) as u8 ^ i as u8;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod lock_tests {
    use super::Lock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn holders_take_turns_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1");
        let inside = AtomicBool::new(false);
        let turns = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let _held = Lock::acquire(&path, true).unwrap().unwrap();
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        turns.fetch_add(1, Ordering::SeqCst);
                        // Long enough for the others to open the file and queue on it.
                        std::thread::sleep(std::time::Duration::from_micros(50));
                        inside.store(false, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(turns.load(Ordering::SeqCst), 6 * 200);
        assert!(!path.exists(), "the lock file outlived its last holder");
    }

    #[test]
    fn a_held_lock_is_not_taken_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c2");
        let held = Lock::acquire(&path, true).unwrap().unwrap();
        assert!(Lock::acquire(&path, false).unwrap().is_none());
        drop(held);
        assert!(!path.exists());
        assert!(Lock::acquire(&path, false).unwrap().is_some());
    }
}
