//! Unpacked layers, one directory per chain ID, shared by every image and container that
//! uses them: `layers/<chain-id hex>/` holds the layer's own files with overlayfs whiteouts.
//!
//! A layer is unpacked into a private `layers/.tmp-*` directory and renamed into place only
//! once it is complete and its DiffID verified; removal renames it to `layers/.trash-*`
//! first. So a crash never leaves a partial directory under a chain ID, and the leftovers of
//! one are found by name and swept by garbage collection.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

pub struct LayerStore {
    dir: PathBuf,
}

/// A layer being unpacked; removed on drop unless committed.
pub struct TempLayer {
    path: PathBuf,
    committed: bool,
}

impl TempLayer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempLayer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// `<pid>-<16 random hex digits>`: names of temporary files and directories, unique across
/// processes and threads, with the creator's pid (so leftovers of dead processes are known).
pub fn unique_suffix() -> String {
    let mut b = [0u8; 8];
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    format!("{}-{}", std::process::id(), crate::digest::hex(&b))
}

impl LayerStore {
    pub fn open(dir: &Path) -> io::Result<LayerStore> {
        fs::create_dir_all(dir)?;
        Ok(LayerStore { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex())
    }

    pub fn contains(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    /// A fresh empty directory to unpack a layer into.
    pub fn temp(&self) -> io::Result<TempLayer> {
        let path = self.dir.join(format!(".tmp-{}", unique_suffix()));
        fs::create_dir(&path)?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(TempLayer { path, committed: false })
    }

    /// Moves a complete (and verified) layer under its chain ID. When a directory is already
    /// there, it is kept if `trust_existing` (it is recorded as a verified layer: ours is
    /// then discarded when `tmp` is dropped), and otherwise atomically replaced by ours (a
    /// directory without a record may have been planted, or left by a version of berth that
    /// committed before verifying); the old one is then in `tmp`, removed when it is dropped.
    /// Returns whether ours is now the layer.
    pub fn commit(&self, tmp: &mut TempLayer, chain_id: &Digest, trust_existing: bool) -> io::Result<bool> {
        let target = self.path(chain_id);
        match berth_sys::file::rename_noreplace(&tmp.path, &target) {
            Ok(()) => {
                tmp.committed = true;
                Ok(true)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                if trust_existing {
                    return Ok(false);
                }
                let aside = self.dir.join(format!(".trash-{}", unique_suffix()));
                berth_sys::file::rename_exchange(&tmp.path, &target, &aside)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a layer: renamed out of sight first, then deleted.
    pub fn remove(&self, chain_id: &Digest) -> io::Result<()> {
        let path = self.path(chain_id);
        let trash = self.dir.join(format!(".trash-{}", unique_suffix()));
        match fs::rename(&path, &trash) {
            Ok(()) => fs::remove_dir_all(&trash),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Chain IDs of the layers present.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes the leftovers of processes that died while unpacking or removing: the
    /// temporary names carry the creator's pid, so only directories of dead processes go.
    /// Safe at any time.
    pub fn sweep_dead(&self) -> io::Result<u64> {
        let mut n = 0;
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let rest = name.strip_prefix(".tmp-").or_else(|| name.strip_prefix(".trash-"));
            let Some(pid) = rest.and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let dead = pid > 0
                && unsafe { libc::kill(pid, 0) } != 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if dead {
                fs::remove_dir_all(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes leftovers of interrupted unpacks and removals. Only safe while no other
    /// process unpacks (the caller holds the store's exclusive lock).
    pub fn sweep_leftovers(&self) -> io::Result<u64> {
        let mut n = 0;
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                fs::remove_dir_all(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Bytes used by the files under `path` (apparent sizes of regular files; hardlinks once).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() && (md.nlink() == 1 || seen.insert((md.dev(), md.ino()))) {
                total += md.len();
            }
        }
    }
    total
}
