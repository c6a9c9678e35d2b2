//! The layer extractor: a tar stream (plain, gzip or zstd) into an empty directory, in one
//! pass, hashing the uncompressed stream for the DiffID as it goes.
//!
//! The `tar` crate only parses. Every entry is created here through file descriptors: its
//! parent directory is opened beneath the layer root with openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS), so no path from the layer is ever resolved through a symlink or
//! outside the root; files are created O_EXCL|O_NOFOLLOW and their owner, mode, xattrs and
//! times are set on the open fd. Entries whose path is absolute, contains `..`, passes
//! through a symlink, or (for hardlinks) points outside the layer are refused with an error
//! naming the layer and the entry.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0:0 character device `NAME`, and
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, HashingReader};
use crate::tarstream::{Chunk, EntryHeader, TarStream};
use crate::{Error, Kind};
use berth_sys::file;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type (OCI and Docker schema2), or an error naming an
    /// unsupported one.
    pub fn from_media_type(media_type: &str) -> Result<Compression, Error> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
            other => Err(Error::unsupported(format!("unsupported layer media type {other:?}"))),
        }
    }

    /// Recognizes a compressed stream by its magic bytes.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// A reader of the uncompressed stream.
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => {
                Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(256 << 10, r)))
            }
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(io::BufReader::with_capacity(256 << 10, r))?)
            }
        })
    }
}

/// What an unpacked layer turned out to be.
#[derive(Debug, Clone)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
    /// Bytes of file content written.
    pub content_bytes: u64,
    pub entries: u64,
}

/// How large an image may grow once unpacked, shared by its layers (unpacked in parallel).
/// A layer counts the larger of its uncompressed tar stream (so every entry's header counts)
/// and the sizes of its files, holes included (so a sparse file counts what it would take
/// copied, not only what it takes on disk). Counted as each entry's header is read, before
/// anything is written.
#[derive(Debug)]
pub struct SizeLimit {
    limit: u64,
    used: AtomicU64,
    /// The setting that gives the limit, for errors (e.g. "storage.max-image-size in berth.toml").
    setting: String,
}

impl SizeLimit {
    pub fn new(limit: u64, setting: &str) -> SizeLimit {
        SizeLimit { limit, used: AtomicU64::new(0), setting: setting.to_string() }
    }

    pub fn unlimited() -> SizeLimit {
        SizeLimit::new(u64::MAX, "no limit")
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes counted so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Counts `n` more bytes, or (counting nothing) says how the limit would be passed.
    pub fn take(&self, n: u64) -> Result<(), String> {
        let mut cur = self.used.load(Ordering::SeqCst);
        loop {
            let Some(next) = cur.checked_add(n).filter(|v| *v <= self.limit) else {
                return Err(format!(
                    "the image would take more than {} bytes unpacked ({} counted before this, {n} more) ({})",
                    self.limit, cur, self.setting
                ));
            };
            match self.used.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(()),
                Err(v) => cur = v,
            }
        }
    }
}

/// The overlayfs xattr that makes a directory hide the lower layers' contents.
pub const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// Unpacks the layer stream `reader` (compressed as `compression`) into the directory `dest`,
/// which should be empty, with no limit on its size (see `unpack_within`). `layer` names the
/// layer in errors (its digest). The reader is read to the end of the compressed stream, so
/// a caller hashing it sees every byte.
pub fn unpack<R: Read>(
    reader: &mut R,
    compression: Compression,
    dest: &std::path::Path,
    layer: &str,
) -> Result<UnpackStats, Error> {
    unpack_within(reader, compression, dest, layer, &SizeLimit::unlimited())
}

/// `unpack`, counting the layer against `limit` (the image's): an entry that would pass it is
/// refused, naming the layer and the entry, before anything of it is written.
pub fn unpack_within<R: Read>(
    reader: &mut R,
    compression: Compression,
    dest: &std::path::Path,
    layer: &str,
    limit: &SizeLimit,
) -> Result<UnpackStats, Error> {
    let root = file::open_dir(dest).map_err(|e| Error::msg(format!("layer {layer}: open {}: {e}", dest.display())))?;
    let decoder = compression.decoder(reader).map_err(|e| Error::msg(format!("layer {layer}: decompress: {e}")))?;
    let hashing = HashingReader::new(decoder);
    let free = file::free_bytes(root.as_fd()).unwrap_or(u64::MAX);
    let mut x = Extractor {
        root,
        layer: layer.to_string(),
        dirs: HashMap::new(),
        deferred_dirs: Vec::new(),
        free,
        content_bytes: 0,
        disk_bytes: 0,
        entries: 0,
        buf: vec![0u8; 256 << 10],
        limit,
        counted: 0,
    };
    let mut tar = TarStream::new(hashing);
    while let Some(h) = tar.next_entry().map_err(|e| x.err(None, format!("reading the tar stream: {e}")))? {
        let stream = tar.get_ref().hasher.len;
        x.count(&h, stream)?;
        x.entry(&h, &mut tar)?;
    }
    x.finish_dirs()?;
    let mut hashing = tar.into_inner();
    // What follows the end of the archive is hashed (it is part of the DiffID) and counted.
    loop {
        match hashing.read(&mut x.buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(x.err(None, format!("reading past the end of the tar stream: {e}"))),
        }
        let total = hashing.hasher.len.max(x.content_bytes);
        if total > x.counted {
            x.limit.take(total - x.counted).map_err(|m| {
                x.err(None, format!("after the end of the archive: {m}")).with_kind(Kind::ResourceExhausted)
            })?;
            x.counted = total;
        }
    }
    Ok(UnpackStats {
        diff_id: hashing.hasher.digest(),
        tar_size: hashing.hasher.len,
        content_bytes: x.content_bytes,
        entries: x.entries,
    })
}

struct Extractor<'l> {
    root: OwnedFd,
    layer: String,
    /// Directories opened beneath the root, by path. Bounded; cleared when full or when a
    /// directory is removed.
    dirs: HashMap<Vec<u8>, OwnedFd>,
    /// Directories whose mtime is set at the end (creating children changes it).
    deferred_dirs: Vec<(Vec<u8>, i64, u32)>,
    free: u64,
    /// Bytes of file content, holes included (what the files' sizes add up to).
    content_bytes: u64,
    /// Bytes of file content actually written (holes are not).
    disk_bytes: u64,
    entries: u64,
    buf: Vec<u8>,
    limit: &'l SizeLimit,
    /// What this layer has counted against `limit`.
    counted: u64,
}

/// Owner, mode, times and xattrs of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    mtime_nsec: u32,
    xattrs: Vec<(CString, Vec<u8>)>,
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Splits an entry path into its components, refusing absolute paths and `..`.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains '..' (escapes the layer root)".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Why a layer or one of its entries failed: what happened to an I/O call, or what is wrong
/// with the content.
trait Refusal {
    fn into_error(self) -> Error;
}

impl Refusal for std::io::Error {
    fn into_error(self) -> Error {
        Error::from_io(self)
    }
}

impl Refusal for String {
    fn into_error(self) -> Error {
        Error::invalid(self)
    }
}

impl Refusal for &str {
    fn into_error(self) -> Error {
        Error::invalid(self)
    }
}

impl Extractor<'_> {
    /// An error about the layer (and its entry): an I/O error keeps its errno and kind; a
    /// description is the layer's content refused (InvalidInput).
    fn err(&self, entry: Option<&[u8]>, why: impl Refusal) -> Error {
        let e = why.into_error();
        match entry {
            Some(entry) => e.context(format!("layer {}: entry {:?}", self.layer, show(entry))),
            None => e.context(format!("layer {}", self.layer)),
        }
    }

    /// Counts the entry whose header ends at byte `stream` of the tar stream against the
    /// limit: the layer's size is the larger of its tar stream (this entry's stored content
    /// and padding included) and its files' sizes (this one's included).
    fn count(&mut self, h: &EntryHeader, stream: u64) -> Result<(), Error> {
        let file = matches!(h.kind, tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse);
        let stored = h.stored.saturating_add((512 - h.stored % 512) % 512);
        let content = self.content_bytes.saturating_add(if file { h.size } else { 0 });
        let total = stream.saturating_add(stored).max(content);
        if total > self.counted {
            self.limit
                .take(total - self.counted)
                .map_err(|m| self.err(Some(&h.path), m).with_kind(Kind::ResourceExhausted))?;
            self.counted = total;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, h: &EntryHeader, tar: &mut TarStream<R>) -> Result<(), Error> {
        self.entries += 1;
        let raw_path = h.path.clone();
        let kind = h.kind;
        let comps = components(&raw_path).map_err(|m| self.err(Some(&raw_path), m))?;
        let Some((name, parent)) = comps.split_last() else {
            // The layer root itself ("./"): its attributes are the layer directory's.
            return Ok(());
        };
        let parent_path = parent.join(&b'/');
        let meta = self.meta(h, &raw_path)?;

        // Whiteouts.
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                let dir = self.dir(&parent_path, true).map_err(|e| self.err(Some(&raw_path), e))?;
                let fd = file::open_beneath(dir.as_fd(), b".", libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| self.err(Some(&raw_path), format!("open directory: {e}")))?;
                file::fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y")
                    .map_err(|e| self.err(Some(&raw_path), format!("set {OPAQUE_XATTR:?}: {e}")))?;
                return Ok(());
            }
            if hidden.starts_with(b".wh.") {
                // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content, as in Docker.
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.err(Some(&raw_path), "invalid whiteout name"));
            }
            let hidden = berth_sys::cstring(hidden).map_err(|e| self.err(Some(&raw_path), e))?;
            let dir = self.dir(&parent_path, true).map_err(|e| self.err(Some(&raw_path), e))?;
            match file::lstatat(dir.as_fd(), &hidden) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    // The same layer also has the directory: it must hide what is below it.
                    let fd = file::open_beneath(dir.as_fd(), hidden.to_bytes(), libc::O_RDONLY | libc::O_DIRECTORY)
                        .map_err(|e| self.err(Some(&raw_path), e))?;
                    file::fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y").map_err(|e| self.err(Some(&raw_path), e))?;
                    return Ok(());
                }
                Ok(_) => return Ok(()), // this layer's own entry already hides the lower one
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err(Some(&raw_path), e)),
            }
            file::mknodat(dir.as_fd(), &hidden, libc::S_IFCHR | 0o600, libc::makedev(0, 0))
                .map_err(|e| self.err(Some(&raw_path), format!("create whiteout: {e}")))?;
            file::lchownat(dir.as_fd(), &hidden, 0, 0).map_err(|e| self.err(Some(&raw_path), e))?;
            return Ok(());
        }

        let cname = berth_sys::cstring(name).map_err(|e| self.err(Some(&raw_path), e))?;
        let dir = self.dir(&parent_path, true).map_err(|e| self.err(Some(&raw_path), e))?;
        let dir = dir.as_fd();
        let replaced_whiteout = self.clear_slot(dir, &cname, kind == tar::EntryType::Directory, &comps.join(&b'/'))?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                // Holes of a sparse file are never written (the file is extended past them),
                // so only its stored data needs room.
                let (size, data) = (h.size, h.stored);
                let room = self.free.saturating_sub(self.disk_bytes);
                if data > room {
                    return Err(self.err(
                        Some(&raw_path),
                        format!("claims {data} bytes, more than the {room} bytes free on the layer filesystem"),
                    ));
                }
                let fd =
                    file::create_file(dir, &cname).map_err(|e| self.err(Some(&raw_path), format!("create: {e}")))?;
                let mut file = File::from(fd);
                let (mut pos, mut written) = (0u64, 0u64);
                loop {
                    match tar.read_chunk(&mut self.buf) {
                        Ok(None) => break,
                        Ok(Some(Chunk::Data(n))) => {
                            file.write_all(&self.buf[..n])
                                .map_err(|e| self.err(Some(&raw_path), format!("write: {e}")))?;
                            pos += n as u64;
                            written += n as u64;
                        }
                        Ok(Some(Chunk::Hole(n))) => {
                            pos =
                                pos.checked_add(n).ok_or_else(|| self.err(Some(&raw_path), "sparse file too large"))?;
                            file.seek(SeekFrom::Start(pos))
                                .map_err(|e| self.err(Some(&raw_path), format!("seek past a hole: {e}")))?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.err(Some(&raw_path), format!("reading content: {e}"))),
                    }
                }
                if pos != size {
                    return Err(self.err(
                        Some(&raw_path),
                        format!("claims {size} bytes but the layer ends after {pos} (truncated layer)"),
                    ));
                }
                if h.sparse {
                    // A hole at the end: the size is set, no byte written.
                    file.set_len(size).map_err(|e| self.err(Some(&raw_path), format!("set size {size}: {e}")))?;
                }
                self.content_bytes += size;
                self.disk_bytes += written;
                self.apply_fd(file.as_fd(), &meta, &raw_path)?;
            }
            tar::EntryType::Directory => {
                if !self.exists_dir(dir, &cname) {
                    file::mkdirat(dir, &cname, 0o700).map_err(|e| self.err(Some(&raw_path), format!("mkdir: {e}")))?;
                }
                let fd = file::open_beneath(dir, cname.to_bytes(), libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| self.err(Some(&raw_path), format!("open directory: {e}")))?;
                self.apply_fd(fd.as_fd(), &Meta { mtime: 0, ..meta.clone_without_time() }, &raw_path)?;
                if replaced_whiteout {
                    file::fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y").map_err(|e| self.err(Some(&raw_path), e))?;
                }
                self.deferred_dirs.push((comps.join(&b'/'), meta.mtime, meta.mtime_nsec));
            }
            tar::EntryType::Symlink => {
                let target = h.link.clone().ok_or_else(|| self.err(Some(&raw_path), "symlink without a target"))?;
                let target = berth_sys::cstring(&target).map_err(|e| self.err(Some(&raw_path), e))?;
                file::symlinkat(&target, dir, &cname)
                    .map_err(|e| self.err(Some(&raw_path), format!("symlink: {e}")))?;
                file::lchownat(dir, &cname, meta.uid, meta.gid).map_err(|e| self.err(Some(&raw_path), e))?;
                for (k, v) in &meta.xattrs {
                    file::lsetxattrat(dir, &cname, k, v)
                        .map_err(|e| self.err(Some(&raw_path), format!("set xattr {k:?}: {e}")))?;
                }
                file::lutimensat(dir, &cname, meta.mtime, meta.mtime_nsec).map_err(|e| self.err(Some(&raw_path), e))?;
            }
            tar::EntryType::Link => {
                let target = h.link.clone().ok_or_else(|| self.err(Some(&raw_path), "hardlink without a target"))?;
                let tcomps = components(&target)
                    .map_err(|m| self.err(Some(&raw_path), format!("hardlink target {:?}: {m}", show(&target))))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(self.err(Some(&raw_path), "hardlink to the layer root"));
                };
                let tdir = self
                    .dir(&tparent.join(&b'/'), false)
                    .map_err(|e| self.err(Some(&raw_path), format!("hardlink target {:?}: {e}", show(&target))))?;
                let tname = berth_sys::cstring(tname).map_err(|e| self.err(Some(&raw_path), e))?;
                // Re-open the entry's directory: the cache may have been cleared by `dir`.
                let dir = self.dir(&parent_path, false).map_err(|e| self.err(Some(&raw_path), e))?;
                file::linkat(tdir.as_fd(), &tname, dir.as_fd(), &cname).map_err(|e| {
                    self.err(Some(&raw_path), format!("hardlink to {:?} (inside this layer): {e}", show(&target)))
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let h = &h.header;
                let (fmt, dev) = match kind {
                    tar::EntryType::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        // The kernel's device numbers: 12 bits of major, 20 of minor. A number
                        // that does not parse is refused (it used to become 0, and 0:0 is an
                        // overlay whiteout).
                        let number = |what: &str, v: io::Result<Option<u32>>, max: u32| match v {
                            Ok(Some(n)) if n <= max => Ok(n),
                            Ok(Some(n)) => {
                                Err(self.err(Some(&raw_path), format!("device {what} {n} out of range (0 to {max})")))
                            }
                            Ok(None) => Err(self.err(Some(&raw_path), format!("device entry without a {what} number"))),
                            Err(e) => {
                                Err(self.err(Some(&raw_path), format!("invalid device {what} in tar header: {e}")))
                            }
                        };
                        let major = number("major", h.device_major(), 0xfff)?;
                        let minor = number("minor", h.device_minor(), 0xfffff)?;
                        let fmt = if kind == tar::EntryType::Char { libc::S_IFCHR } else { libc::S_IFBLK };
                        (fmt, libc::makedev(major, minor))
                    }
                };
                file::mknodat(dir, &cname, fmt | 0o600, dev)
                    .map_err(|e| self.err(Some(&raw_path), format!("mknod: {e}")))?;
                file::lchownat(dir, &cname, meta.uid, meta.gid).map_err(|e| self.err(Some(&raw_path), e))?;
                file::fchmodat(dir, &cname, meta.mode).map_err(|e| self.err(Some(&raw_path), e))?;
                for (k, v) in &meta.xattrs {
                    file::lsetxattrat(dir, &cname, k, v)
                        .map_err(|e| self.err(Some(&raw_path), format!("set xattr {k:?}: {e}")))?;
                }
                file::lutimensat(dir, &cname, meta.mtime, meta.mtime_nsec).map_err(|e| self.err(Some(&raw_path), e))?;
            }
            other => return Err(self.err(Some(&raw_path), format!("unsupported tar entry type {other:?}"))),
        }
        Ok(())
    }

    fn meta(&self, entry: &EntryHeader, raw_path: &[u8]) -> Result<Meta, Error> {
        let h = &entry.header;
        let bad = |what: &str, e: io::Error| self.err(Some(raw_path), format!("invalid {what} in tar header: {e}"));
        let mut uid = h.uid().map_err(|e| bad("uid", e))?;
        let mut gid = h.gid().map_err(|e| bad("gid", e))?;
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut mtime = h.mtime().map_err(|e| bad("mtime", e))? as i64;
        let mut mtime_nsec = 0u32;
        let mut xattrs = Vec::new();
        for (key, value) in &entry.pax {
            let (key, value) = (key.as_slice(), value.as_slice());
            let num = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok());
            match key {
                b"uid" => uid = num(value).ok_or_else(|| self.err(Some(raw_path), "invalid pax uid"))?,
                b"gid" => gid = num(value).ok_or_else(|| self.err(Some(raw_path), "invalid pax gid"))?,
                b"mtime" => {
                    let s = std::str::from_utf8(value).unwrap_or("");
                    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
                    mtime = sec.parse().map_err(|_| self.err(Some(raw_path), "invalid pax mtime"))?;
                    let digits: String = frac.chars().take(9).collect();
                    if !digits.is_empty() {
                        mtime_nsec = format!("{digits:0<9}").parse().unwrap_or(0);
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        if name.starts_with(b"trusted.overlay.") {
                            return Err(self.err(
                                Some(raw_path),
                                format!("refusing overlayfs control xattr {:?} in a layer", show(name)),
                            ));
                        }
                        xattrs
                            .push((berth_sys::cstring(name).map_err(|e| self.err(Some(raw_path), e))?, value.to_vec()));
                    }
                }
            }
        }
        // Owners are 32-bit, and (uid_t)-1 is no owner: chown(2) takes it for "unchanged" and
        // would leave the file root's.
        let id = |what: &str, v: u64| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| self.err(Some(raw_path), format!("{what} {v} out of range (0 to 4294967294)")))
        };
        let (uid, gid) = (id("uid", uid)?, id("gid", gid)?);
        Ok(Meta { uid, gid, mode, mtime, mtime_nsec, xattrs })
    }

    /// Owner, then mode (chown clears set-id bits), xattrs and times, on an open fd.
    fn apply_fd(&self, fd: BorrowedFd, meta: &Meta, raw_path: &[u8]) -> Result<(), Error> {
        file::fchown(fd, meta.uid, meta.gid).map_err(|e| self.err(Some(raw_path), format!("chown: {e}")))?;
        file::fchmod(fd, meta.mode).map_err(|e| self.err(Some(raw_path), format!("chmod: {e}")))?;
        for (k, v) in &meta.xattrs {
            file::fsetxattr(fd, k, v).map_err(|e| self.err(Some(raw_path), format!("set xattr {k:?}: {e}")))?;
        }
        if meta.mtime != 0 || meta.mtime_nsec != 0 {
            file::futimens(fd, meta.mtime, meta.mtime_nsec)
                .map_err(|e| self.err(Some(raw_path), format!("set times: {e}")))?;
        }
        Ok(())
    }

    fn exists_dir(&self, dir: BorrowedFd, name: &CStr) -> bool {
        matches!(file::lstatat(dir, name), Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }

    /// Makes room for a new entry `name`: an existing entry is removed unless both are
    /// directories. Returns whether the removed entry was a whiteout.
    fn clear_slot(&mut self, dir: BorrowedFd, name: &CStr, new_is_dir: bool, full: &[u8]) -> Result<bool, Error> {
        let st = match file::lstatat(dir, name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.err(Some(full), e)),
        };
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFDIR {
            if new_is_dir {
                return Ok(false);
            }
            // Cached directory fds at or below this path would point into the removed tree.
            self.dirs.clear();
            file::remove_all_at(dir, name).map_err(|e| self.err(Some(full), format!("replace directory: {e}")))?;
            return Ok(false);
        }
        let whiteout = fmt == libc::S_IFCHR && st.st_rdev == 0;
        file::unlinkat(dir, name, 0).map_err(|e| self.err(Some(full), format!("replace: {e}")))?;
        Ok(whiteout)
    }

    /// The directory at `path` beneath the root (cached), created with mode 0755 (and
    /// parents) when `create` and missing. A symlink or non-directory on the way is an error.
    fn dir(&mut self, path: &[u8], create: bool) -> Result<OwnedFd, String> {
        if path.is_empty() {
            return self.root.try_clone().map_err(|e| e.to_string());
        }
        if let Some(fd) = self.dirs.get(path) {
            return fd.try_clone().map_err(|e| e.to_string());
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let fd = match file::open_beneath(self.root.as_fd(), path, flags) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) && create => {
                // Walk and create the missing components one by one.
                let mut cur = self.root.try_clone().map_err(|e| e.to_string())?;
                for comp in path.split(|b| *b == b'/') {
                    let c = berth_sys::cstring(comp).map_err(|e| e.to_string())?;
                    cur = match file::open_beneath(cur.as_fd(), comp, flags) {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            file::mkdirat(cur.as_fd(), &c, 0o755)
                                .map_err(|e| format!("mkdir {:?}: {e}", show(comp)))?;
                            // 0755 whatever the umask, as Docker creates implied parents.
                            file::fchmodat(cur.as_fd(), &c, 0o755).map_err(|e| e.to_string())?;
                            file::open_beneath(cur.as_fd(), comp, flags).map_err(|e| e.to_string())?
                        }
                        Err(e)
                            if e.raw_os_error() == Some(libc::ENOTDIR)
                                && matches!(file::lstatat(cur.as_fd(), &c), Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0) =>
                        {
                            // A whiteout of this layer, then entries below it: the directory is
                            // recreated, hiding the lower layers' one (opaque).
                            file::unlinkat(cur.as_fd(), &c, 0).map_err(|e| e.to_string())?;
                            file::mkdirat(cur.as_fd(), &c, 0o755)
                                .map_err(|e| format!("mkdir {:?}: {e}", show(comp)))?;
                            let d = file::open_beneath(cur.as_fd(), comp, libc::O_RDONLY | libc::O_DIRECTORY)
                                .map_err(|e| e.to_string())?;
                            file::fsetxattr(d.as_fd(), OPAQUE_XATTR, b"y").map_err(|e| e.to_string())?;
                            file::open_beneath(cur.as_fd(), comp, flags).map_err(|e| e.to_string())?
                        }
                        Err(e) => return Err(describe_parent_error(path, e)),
                    };
                }
                cur
            }
            Err(e) => return Err(describe_parent_error(path, e)),
        };
        if self.dirs.len() >= 64 {
            self.dirs.clear();
        }
        let ret = fd.try_clone().map_err(|e| e.to_string())?;
        self.dirs.insert(path.to_vec(), fd);
        Ok(ret)
    }

    fn finish_dirs(&mut self) -> Result<(), Error> {
        let dirs = std::mem::take(&mut self.deferred_dirs);
        for (path, mtime, nsec) in dirs.iter().rev() {
            let fd = match file::open_beneath(self.root.as_fd(), path, libc::O_RDONLY | libc::O_DIRECTORY) {
                Ok(fd) => fd,
                // Replaced by a later entry: nothing to do.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => continue,
                Err(e) => return Err(self.err(Some(path), e)),
            };
            file::futimens(fd.as_fd(), *mtime, *nsec).map_err(|e| self.err(Some(path), e))?;
        }
        Ok(())
    }
}

impl Meta {
    fn clone_without_time(&self) -> Meta {
        Meta { uid: self.uid, gid: self.gid, mode: self.mode, mtime: 0, mtime_nsec: 0, xattrs: self.xattrs.clone() }
    }
}

fn describe_parent_error(path: &[u8], e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => format!("parent directory {:?} is or passes through a symlink", show(path)),
        Some(libc::ENOTDIR) => format!("parent {:?} is not a directory", show(path)),
        Some(libc::EXDEV) => format!("parent {:?} crosses a mount point or leaves the layer root", show(path)),
        Some(libc::ENOENT) => format!("{:?} does not exist in this layer", show(path)),
        _ => format!("open {:?}: {e}", show(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components(b"./a//b/./c").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../b").is_err());
        assert!(components(b"..").is_err());
        assert!(components(b"./").unwrap().is_empty());
    }
}
