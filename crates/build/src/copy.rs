//! COPY and ADD's files: the sources an argument names (wildcards, the ignore file), their
//! checksum for the cache, and the copy into a root filesystem as docker does it.
//!
//! Both sides are treated as hostile. A source in the build context is opened beneath the
//! context (a symlink that leads out of it is an error); one in a stage or image resolves as
//! if that root were `/`. The destination root is a container's: its paths resolve inside it
//! (`openat2(RESOLVE_IN_ROOT)`), and nothing is created or written through a symlink.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_sys::file;

use crate::ignore::Ignore;
use crate::words::glob_at;

/// Where COPY's sources come from.
pub struct Origin {
    root: OwnedFd,
    /// How it is named in errors: "the build context", "stage builder", "image busybox".
    pub name: String,
    kind: OriginKind,
    ignore: Ignore,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OriginKind {
    /// The build context: owners are not carried (files become root's or --chown's), and a
    /// symlink may not lead out.
    Context,
    /// A stage's or image's root filesystem: owners are kept, symlinks resolve inside it.
    Root,
}

/// What COPY does with what it copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// --chown: the owner of everything copied and of directories created for it.
    pub owner: Option<(u32, u32)>,
    /// --chmod: the mode of every file and directory copied.
    pub mode: Option<u32>,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub entries: u64,
    pub bytes: u64,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `path` cleaned and relative to its root (a leading `/` too: sources are paths in the
/// context); None when `..` would climb above the root.
pub fn clean_relative(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

fn io_err(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

/// A reopened descriptor of an O_PATH one, with `flags`.
fn reopen(fd: BorrowedFd, flags: i32) -> std::io::Result<OwnedFd> {
    file::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)).as_str(), flags)
}

/// How the walk reaches an entry: the source itself (an O_PATH descriptor, resolved as the
/// origin allows), or a name in a directory it has open.
enum Entry<'a> {
    Top(OwnedFd),
    Child(&'a OwnedFd, &'a CStr),
}

/// One entry of a source tree, as the walk meets it.
enum Node<'a> {
    /// A directory, before its entries (`fd` readable).
    Enter {
        rel: &'a str,
        st: &'a libc::stat,
        fd: &'a OwnedFd,
    },
    /// The same directory after its entries.
    Leave {
        rel: &'a str,
        st: &'a libc::stat,
    },
    File {
        rel: &'a str,
        st: &'a libc::stat,
        fd: OwnedFd,
    },
    Symlink {
        rel: &'a str,
        st: &'a libc::stat,
        target: Vec<u8>,
    },
    /// A device or fifo (sockets are skipped).
    Special {
        rel: &'a str,
        st: &'a libc::stat,
    },
}

impl Origin {
    /// The build context at `dir`, with its ignore rules.
    pub fn context(dir: &Path, ignore: Ignore) -> Result<Origin, String> {
        let root = file::open_dir(dir).map_err(|e| io_err(&format!("the build context {}", dir.display()), e))?;
        Ok(Origin { root, name: "the build context".into(), kind: OriginKind::Context, ignore })
    }

    /// A root filesystem (a stage's or an image's), named `name` in errors.
    pub fn root_filesystem(dir: &Path, name: String) -> Result<Origin, String> {
        let root = file::open_dir(dir).map_err(|e| io_err(&format!("{name} ({})", dir.display()), e))?;
        Ok(Origin { root, name, kind: OriginKind::Root, ignore: Ignore::default() })
    }

    fn hidden(&self, rel: &str) -> bool {
        self.kind == OriginKind::Context && !rel.is_empty() && self.ignore.excluded(rel)
    }

    /// Opens `rel` (following symlinks as the origin allows), O_PATH.
    fn open(&self, rel: &str) -> Result<OwnedFd, String> {
        let path = if rel.is_empty() { "." } else { rel };
        let resolve = match self.kind {
            OriginKind::Context => file::RESOLVE_BENEATH | file::RESOLVE_NO_MAGICLINKS,
            OriginKind::Root => file::RESOLVE_IN_ROOT | file::RESOLVE_NO_MAGICLINKS,
        };
        file::openat2(&self.root, path, libc::O_PATH, 0, resolve).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => format!("{rel}: not found in {}", self.name),
            Some(libc::EXDEV) => format!("{rel}: a symlink on its path leads out of {}", self.name),
            _ => io_err(&format!("{rel} in {}", self.name), e),
        })
    }

    /// The sources a COPY argument names, relative to the origin's root: the path itself, or
    /// every path a wildcard matches (sorted). Sources the ignore file leaves out do not
    /// exist for the build.
    pub fn expand(&self, arg: &str) -> Result<Vec<String>, String> {
        let clean = clean_relative(arg).ok_or_else(|| format!("{arg}: outside {}", self.name))?;
        if !has_glob(&clean) {
            if self.hidden(&clean) {
                return Err(format!("{arg}: not found in {} (the ignore file leaves it out)", self.name));
            }
            self.open(&clean)?;
            return Ok(vec![clean]);
        }
        let pattern: Vec<Vec<char>> = clean.split('/').map(|c| c.chars().collect()).collect();
        let mut found = Vec::new();
        self.glob(&self.open("")?, "", &pattern, &mut found)?;
        if found.is_empty() {
            return Err(format!("{arg}: no file in {} matches", self.name));
        }
        found.sort();
        Ok(found)
    }

    /// Entries below `dir` (at depth `rel`) matching `pattern`'s remaining components.
    fn glob(&self, dir: &OwnedFd, rel: &str, pattern: &[Vec<char>], out: &mut Vec<String>) -> Result<(), String> {
        let Some((first, rest)) = pattern.split_first() else { return Ok(()) };
        let d = reopen(dir.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| io_err(rel, e))?;
        let mut names = file::read_dir_names(&d).map_err(|e| io_err(rel, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let n = name.to_string_lossy();
            let chars: Vec<char> = n.chars().collect();
            if !glob_at(first, &chars, &|c| c != '/') {
                continue;
            }
            let child = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
            if self.hidden(&child) && !self.ignore.may_include_below(&child) {
                continue;
            }
            if rest.is_empty() {
                if !self.hidden(&child) {
                    out.push(child);
                }
                continue;
            }
            let st = file::lstatat(&d, &name).map_err(|e| io_err(&child, e))?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let fd = file::openat(&d, &name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(|e| io_err(&child, e))?;
                self.glob(&fd, &child, rest, out)?;
            }
        }
        Ok(())
    }

    /// Walks the source `rel` (following it if it is a symlink the origin allows), its
    /// entries not followed, in name order; `visit` sees each node with its path relative to
    /// the source (empty for the source itself).
    fn walk(&self, rel: &str, visit: &mut dyn FnMut(Node) -> Result<(), String>) -> Result<(), String> {
        let fd = self.open(rel)?;
        let st = file::fstat(&fd).map_err(|e| io_err(rel, e))?;
        self.walk_node(Entry::Top(fd), st, rel, "", visit)
    }

    fn walk_node(
        &self,
        entry: Entry,
        st: libc::stat,
        full: &str,
        rel: &str,
        visit: &mut dyn FnMut(Node) -> Result<(), String>,
    ) -> Result<(), String> {
        // Entries below the source are opened from their directory, never followed.
        let open = |flags: i32| match &entry {
            Entry::Top(fd) => reopen(fd.as_fd(), flags),
            Entry::Child(dir, name) => file::openat(*dir, *name, flags | libc::O_NOFOLLOW, 0),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let d = open(libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| io_err(full, e))?;
                visit(Node::Enter { rel, st: &st, fd: &d })?;
                let mut names = file::read_dir_names(&d).map_err(|e| io_err(full, e))?;
                names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                for name in names {
                    let n = std::str::from_utf8(name.as_bytes())
                        .map_err(|_| format!("{full}: an entry whose name is not UTF-8"))?;
                    let child_full = if full.is_empty() { n.to_string() } else { format!("{full}/{n}") };
                    let child_rel = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
                    if self.hidden(&child_full) && !self.ignore.may_include_below(&child_full) {
                        continue;
                    }
                    let cst = file::lstatat(&d, &name).map_err(|e| io_err(&child_full, e))?;
                    if self.hidden(&child_full) && cst.st_mode & libc::S_IFMT != libc::S_IFDIR {
                        continue;
                    }
                    self.walk_node(Entry::Child(&d, &name), cst, &child_full, &child_rel, visit)?;
                }
                visit(Node::Leave { rel, st: &st })
            }
            libc::S_IFREG => {
                let f = open(libc::O_RDONLY).map_err(|e| io_err(full, e))?;
                visit(Node::File { rel, st: &st, fd: f })
            }
            libc::S_IFLNK => {
                let target = match &entry {
                    Entry::Top(fd) => file::readlinkat(fd, ""),
                    Entry::Child(dir, name) => file::readlinkat(*dir, *name),
                }
                .map_err(|e| io_err(full, e))?;
                visit(Node::Symlink { rel, st: &st, target })
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => visit(Node::Special { rel, st: &st }),
            _ => Ok(()),
        }
    }

    /// The sha256 (hex) of what the cache compares of `sources`: names, kinds, modes, sizes,
    /// contents and link targets, in order; not times, and owners only where they are kept.
    pub fn checksum(&self, sources: &[String]) -> Result<String, String> {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let mut out = |d: &[u8]| hasher.update(d);
        let keep_owner = self.kind == OriginKind::Root;
        let mut buf = vec![0u8; 256 << 10];
        for src in sources {
            out(format!("source {src}\0").as_bytes());
            self.walk(src, &mut |node| {
                let (kind, rel, st) = match &node {
                    Node::Enter { rel, st, .. } => ("dir", *rel, *st),
                    Node::Leave { .. } => return Ok(()),
                    Node::File { rel, st, .. } => ("file", *rel, *st),
                    Node::Symlink { rel, st, .. } => ("link", *rel, *st),
                    Node::Special { rel, st } => ("special", *rel, *st),
                };
                let owner = if keep_owner { format!(" {}:{}", st.st_uid, st.st_gid) } else { String::new() };
                out(format!("{kind} {rel} {:o} {}{owner}\0", st.st_mode, st.st_size).as_bytes());
                match node {
                    Node::File { fd, .. } => {
                        let mut f = std::fs::File::from(fd);
                        loop {
                            let n = f.read(&mut buf).map_err(|e| io_err(rel, e))?;
                            if n == 0 {
                                break;
                            }
                            out(&buf[..n]);
                        }
                    }
                    Node::Symlink { target, .. } => out(&target),
                    Node::Special { st, .. } => out(format!("{}", st.st_rdev).as_bytes()),
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(format!("{:x}", hasher.finalize()))
    }
}

/// The destination of a copy: a root filesystem and a path in it.
pub struct Destination<'a> {
    pub root: &'a Path,
    /// Absolute in the root (relative ones were joined to WORKDIR by the caller).
    pub path: &'a str,
}

/// Copies `sources` of `origin` to `dest` as COPY does: a directory's contents go into the
/// destination directory; a file goes to the destination path, or into it when `into_dir`
/// (the destination ends with `/`, several sources, or it is an existing directory).
pub fn copy(
    origin: &Origin,
    sources: &[String],
    dest: &Destination,
    into_dir: bool,
    opts: &CopyOptions,
) -> Result<Copied, String> {
    let root = file::open_dir(dest.root).map_err(|e| io_err(&dest.root.display().to_string(), e))?;
    let dest_rel = clean_relative(dest.path).unwrap_or_default();
    let mut copier = Copier { root: &root, origin, opts, copied: Copied::default(), links: HashMap::new() };
    let dest_is_dir = into_dir || copier.is_dir(&dest_rel);
    for src in sources {
        let fd = origin.open(src)?;
        let st = file::fstat(&fd).map_err(|e| io_err(src, e))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let target = if is_dir || !dest_is_dir {
            dest_rel.clone()
        } else {
            let base = src.rsplit('/').next().unwrap_or(src);
            join(&dest_rel, base)
        };
        copier.copy_source(src, &target)?;
    }
    Ok(copier.copied)
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}/{b}")
    }
}

struct Copier<'a> {
    root: &'a OwnedFd,
    origin: &'a Origin,
    opts: &'a CopyOptions,
    copied: Copied,
    /// Files with several links already copied: (device, inode) → destination path.
    links: HashMap<(u64, u64), String>,
}

impl Copier<'_> {
    fn is_dir(&self, rel: &str) -> bool {
        let path = if rel.is_empty() { "." } else { rel };
        file::open_in_root(self.root, path, libc::O_PATH | libc::O_DIRECTORY).is_ok()
    }

    fn owner(&self, st: &libc::stat) -> (u32, u32) {
        match (self.opts.owner, self.origin.kind) {
            (Some(o), _) => o,
            (None, OriginKind::Root) => (st.st_uid, st.st_gid),
            (None, OriginKind::Context) => (0, 0),
        }
    }

    fn dir(&self, rel: &str) -> Result<OwnedFd, String> {
        dir_in_root(self.root, rel, self.opts.owner.unwrap_or((0, 0)))
    }

    /// Makes room for a new non-directory `name` in `dir`: what is there goes, unless it is
    /// a directory (an error, as docker's).
    fn clear(&self, dir: &OwnedFd, name: &CStr, rel: &str) -> Result<(), String> {
        match file::lstatat(dir, name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                Err(format!("/{rel}: a directory is in the way of a file being copied"))
            }
            Ok(_) => file::unlinkat(dir, name, 0).map_err(|e| io_err(&format!("/{rel}"), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&format!("/{rel}"), e)),
        }
    }

    fn copy_source(&mut self, src: &str, target: &str) -> Result<(), String> {
        let origin = self.origin;
        // Directories entered, with the descriptor of their destination.
        let mut dirs: Vec<OwnedFd> = Vec::new();
        origin.walk(src, &mut |node| {
            match node {
                Node::Enter { rel, st, fd } => {
                    let dest = join(target, rel);
                    let existed = self.is_dir(&dest);
                    let d = self.dir(&dest)?;
                    if !rel.is_empty() || !existed {
                        // A directory copied (the source's own one only when it is created).
                        let (uid, gid) = self.owner(st);
                        file::fchown(&d, uid, gid).map_err(|e| io_err(&format!("/{dest}"), e))?;
                        copy_xattrs(fd, &d).map_err(|e| format!("/{dest}: {e}"))?;
                    }
                    dirs.push(d);
                    self.copied.entries += 1;
                }
                Node::Leave { rel, st } => {
                    let d = dirs.pop().expect("entered");
                    // The source directory itself gives only its contents (and --chmod).
                    let top = rel.is_empty();
                    if !top || self.opts.mode.is_some() {
                        let mode = self.opts.mode.unwrap_or(st.st_mode & 0o7777);
                        file::fchmod(&d, mode).map_err(|e| io_err(&format!("/{}", join(target, rel)), e))?;
                    }
                    if !top {
                        file::futimens(&d, st.st_mtime, st.st_mtime_nsec as u32)
                            .map_err(|e| io_err(&format!("/{}", join(target, rel)), e))?;
                    }
                }
                Node::File { rel, st, fd } => {
                    let dest = join(target, rel);
                    let (parent, name) = self.place(&dirs, &dest)?;
                    self.clear(&parent, &name, &dest)?;
                    let key = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some(first) = self.links.get(&key) {
                            let (fparent, fname) = split(first);
                            let fdir = self.dir(fparent)?;
                            file::linkat(&fdir, fname, &parent, &name).map_err(|e| io_err(&format!("/{dest}"), e))?;
                            self.copied.entries += 1;
                            return Ok(());
                        }
                        self.links.insert(key, dest.clone());
                    }
                    let out = file::openat(
                        &parent,
                        &name,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                        0o600,
                    )
                    .map_err(|e| io_err(&format!("/{dest}"), e))?;
                    let mut from = std::fs::File::from(fd);
                    let mut to = std::fs::File::from(out);
                    let n = std::io::copy(&mut from, &mut to).map_err(|e| io_err(&format!("/{dest}"), e))?;
                    let (uid, gid) = self.owner(st);
                    let to_fd = std::os::fd::OwnedFd::from(to);
                    file::fchown(&to_fd, uid, gid).map_err(|e| io_err(&format!("/{dest}"), e))?;
                    copy_xattrs(&OwnedFd::from(from), &to_fd).map_err(|e| format!("/{dest}: {e}"))?;
                    // After the owner: chown clears set-id bits.
                    let mode = self.opts.mode.unwrap_or(st.st_mode & 0o7777);
                    file::fchmod(&to_fd, mode).map_err(|e| io_err(&format!("/{dest}"), e))?;
                    file::futimens(&to_fd, st.st_mtime, st.st_mtime_nsec as u32)
                        .map_err(|e| io_err(&format!("/{dest}"), e))?;
                    self.copied.entries += 1;
                    self.copied.bytes += n;
                }
                Node::Symlink { rel, st, target: link } => {
                    let dest = join(target, rel);
                    let (parent, name) = self.place(&dirs, &dest)?;
                    self.clear(&parent, &name, &dest)?;
                    file::symlinkat(OsStr::from_bytes(&link), &parent, &name)
                        .map_err(|e| io_err(&format!("/{dest}"), e))?;
                    let (uid, gid) = self.owner(st);
                    file::lchownat(&parent, &name, uid, gid).map_err(|e| io_err(&format!("/{dest}"), e))?;
                    file::lutimensat(&parent, &name, st.st_mtime, st.st_mtime_nsec as u32)
                        .map_err(|e| io_err(&format!("/{dest}"), e))?;
                    self.copied.entries += 1;
                }
                Node::Special { rel, st } => {
                    let dest = join(target, rel);
                    let (parent, name) = self.place(&dirs, &dest)?;
                    self.clear(&parent, &name, &dest)?;
                    file::mknodat(&parent, &name, st.st_mode & (libc::S_IFMT | 0o777), st.st_rdev)
                        .map_err(|e| io_err(&format!("/{dest}"), e))?;
                    let (uid, gid) = self.owner(st);
                    file::lchownat(&parent, &name, uid, gid).map_err(|e| io_err(&format!("/{dest}"), e))?;
                    let mode = self.opts.mode.unwrap_or(st.st_mode & 0o7777);
                    file::fchmodat(&parent, &name, mode).map_err(|e| io_err(&format!("/{dest}"), e))?;
                    self.copied.entries += 1;
                }
            }
            Ok(())
        })
    }

    /// The directory a new entry `dest` goes in (the innermost entered one, or resolved in
    /// the root for a single file) and its name.
    fn place(&self, dirs: &[OwnedFd], dest: &str) -> Result<(OwnedFd, CString), String> {
        let (parent, name) = split(dest);
        if name.is_empty() {
            return Err("/: a file cannot replace the root directory".into());
        }
        let fd = match dirs.last() {
            Some(d) => file::dup(d).map_err(|e| io_err(&format!("/{parent}"), e))?,
            None => self.dir(parent)?,
        };
        Ok((fd, CString::new(name).map_err(|_| format!("/{dest}: a NUL byte in the name"))?))
    }
}

/// The directory `rel` in the root `root` (resolved inside it), made with its missing parents
/// (0755, owned by `owner`) when absent.
fn dir_in_root(root: &OwnedFd, rel: &str, owner: (u32, u32)) -> Result<OwnedFd, String> {
    let open =
        |p: &str| file::open_in_root(root, if p.is_empty() { "." } else { p }, libc::O_RDONLY | libc::O_DIRECTORY);
    match open(rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(format!("/{rel}: not a directory in the image (cannot copy into it)"))
        }
        Err(e) => return Err(io_err(&format!("/{rel}"), e)),
    }
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let pfd = dir_in_root(root, parent, owner)?;
    match file::mkdirat(&pfd, name, 0o755) {
        Ok(()) => {
            file::lchownat(&pfd, name, owner.0, owner.1).map_err(|e| io_err(&format!("/{rel}"), e))?;
            file::fchmodat(&pfd, name, 0o755).map_err(|e| io_err(&format!("/{rel}"), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(&format!("/{rel}"), e)),
    }
    open(rel).map_err(|e| io_err(&format!("/{rel}"), e))
}

/// The directory `path` in the root filesystem at `root`, resolved inside it and made (with
/// its parents, root's, 0755) when absent: for ADD's archives to unpack into.
pub fn destination_dir(root: &Path, path: &str) -> Result<OwnedFd, String> {
    let r = file::open_dir(root).map_err(|e| io_err(&root.display().to_string(), e))?;
    dir_in_root(&r, &clean_relative(path).unwrap_or_default(), (0, 0))
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The source's xattrs on the copy (what an unprivileged tool cannot set is skipped silently
/// by none: root copies them all; overlayfs' own are never carried).
fn copy_xattrs(from: &OwnedFd, to: &OwnedFd) -> std::io::Result<()> {
    for (k, v) in file::fxattrs(from)? {
        if k.to_bytes().starts_with(b"trusted.overlay.") {
            continue;
        }
        file::fsetxattr(to, &k, &v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    struct Fixture {
        _tmp: tempfile::TempDir,
        ctx: std::path::PathBuf,
        root: std::path::PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let (ctx, root) = (tmp.path().join("ctx"), tmp.path().join("root"));
        std::fs::create_dir_all(ctx.join("dir/sub")).unwrap();
        std::fs::write(ctx.join("a.txt"), "a").unwrap();
        std::fs::write(ctx.join("b.txt"), "b").unwrap();
        std::fs::write(ctx.join("dir/one"), "1").unwrap();
        std::fs::set_permissions(ctx.join("dir/one"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::write(ctx.join("dir/sub/two"), "2").unwrap();
        std::fs::write(ctx.join("dir/secret.key"), "k").unwrap();
        std::fs::hard_link(ctx.join("dir/one"), ctx.join("dir/sub/one-again")).unwrap();
        std::os::unix::fs::symlink("one", ctx.join("dir/link")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", ctx.join("escape")).unwrap();
        std::os::unix::fs::symlink("a.txt", ctx.join("inside")).unwrap();
        // The image: merged /usr (lib -> usr/lib), and an absolute symlink that must
        // resolve inside the root.
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("conf")).unwrap();
        Fixture { _tmp: tmp, ctx, root }
    }

    fn origin(f: &Fixture) -> Origin {
        Origin::context(&f.ctx, Ignore::parse("**/*.key\n", "ignore").unwrap()).unwrap()
    }

    fn run(f: &Fixture, srcs: &[&str], dest: &str, opts: CopyOptions) -> Result<Copied, String> {
        let o = origin(f);
        let mut sources = Vec::new();
        for s in srcs {
            sources.extend(o.expand(s)?);
        }
        let into_dir = dest.ends_with('/') || sources.len() > 1;
        copy(&o, &sources, &Destination { root: &f.root, path: dest }, into_dir, &opts)
    }

    #[test]
    fn sources_and_wildcards() {
        let f = fixture();
        let o = origin(&f);
        assert_eq!(o.expand("*.txt").unwrap(), ["a.txt", "b.txt"]);
        assert_eq!(o.expand("/dir/../a.txt").unwrap(), ["a.txt"]);
        assert_eq!(o.expand("dir/s*/t?o").unwrap(), ["dir/sub/two"]);
        assert!(o.expand("../x").unwrap_err().contains("outside the build context"));
        assert!(o.expand("nope").unwrap_err().contains("not found in the build context"));
        assert!(o.expand("*.none").unwrap_err().contains("matches"));
        assert!(o.expand("dir/secret.key").unwrap_err().contains("ignore"));
        assert!(o.expand("escape").unwrap_err().contains("leads out of the build context"));
        assert_eq!(o.expand("inside").unwrap(), ["inside"]);
    }

    #[test]
    fn directories_files_and_owners() {
        let f = fixture();
        let c = run(&f, &["dir"], "/app", CopyOptions::default()).unwrap();
        assert!(c.entries >= 5, "{c:?}");
        let app = f.root.join("app");
        assert_eq!(std::fs::read_to_string(app.join("one")).unwrap(), "1");
        assert_eq!(std::fs::metadata(app.join("one")).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(std::fs::read_to_string(app.join("sub/two")).unwrap(), "2");
        assert!(!app.join("secret.key").exists(), "ignored");
        assert_eq!(std::fs::read_link(app.join("link")).unwrap(), Path::new("one"));
        let (a, b) =
            (std::fs::metadata(app.join("one")).unwrap(), std::fs::metadata(app.join("sub/one-again")).unwrap());
        assert_eq!(a.ino(), b.ino(), "hardlinks kept");
        assert_eq!((a.uid(), a.gid()), (0, 0));
        assert_eq!(std::fs::metadata(&app).unwrap().mode() & 0o7777, 0o755);

        run(&f, &["a.txt"], "/lib/", CopyOptions { owner: Some((7, 8)), mode: Some(0o600) }).unwrap();
        let m = std::fs::metadata(f.root.join("usr/lib/a.txt")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (7, 8, 0o600), "through the image's own symlink");
        run(&f, &["b.txt"], "/conf/renamed", CopyOptions::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(f.root.join("etc/renamed")).unwrap(),
            "b",
            "an absolute link stays in the root"
        );
        run(&f, &["*.txt"], "/multi/", CopyOptions::default()).unwrap();
        assert!(f.root.join("multi/a.txt").is_file() && f.root.join("multi/b.txt").is_file());
        run(&f, &["a.txt"], "/app", CopyOptions::default()).unwrap();
        assert!(f.root.join("app/a.txt").is_file(), "an existing directory takes the file");
        std::fs::create_dir_all(f.root.join("app2/one")).unwrap();
        let e = run(&f, &["dir"], "/app2", CopyOptions::default()).unwrap_err();
        assert!(e.contains("/app2/one: a directory is in the way"), "{e}");
    }

    #[test]
    fn checksums_follow_contents_not_times() {
        let f = fixture();
        let sum = || {
            let o = origin(&f);
            o.checksum(&o.expand("dir").unwrap()).unwrap()
        };
        let first = sum();
        let t = std::fs::File::options().write(true).open(f.ctx.join("dir/sub/two")).unwrap();
        t.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(sum(), first);
        std::fs::write(f.ctx.join("dir/sub/two"), "changed").unwrap();
        assert_ne!(sum(), first);
        std::fs::write(f.ctx.join("dir/secret.key"), "ignored changes").unwrap();
        let again = sum();
        std::fs::write(f.ctx.join("dir/secret.key"), "more").unwrap();
        assert_eq!(sum(), again);
    }
}
