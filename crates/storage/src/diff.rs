//! The reverse of unpacking: a directory in this store's layer format (an overlay upper
//! directory, or a layer directory) written as an OCI layer tar. Overlay whiteouts (0:0
//! character devices) become `.wh.NAME` entries, an opaque directory
//! (`trusted.overlay.opaque=y`) gets `.wh..wh..opq`, hardlinked files are written once and
//! linked after, and owners, modes, times, devices and xattrs (file capabilities included)
//! are kept, overlayfs' own `trusted.overlay.*` aside. Entries are sorted by name, so the same
//! tree gives the same tar. The walk never follows a symlink.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_sys::file;

use crate::digest::{Digest, Hasher};
use crate::unpack::{Compression, OPAQUE_XATTR};
use crate::{io_error, Error};

/// What a written layer is.
#[derive(Debug, Clone)]
pub struct LayerTar {
    /// sha256 of the uncompressed tar (the layer's diff ID).
    pub diff_id: Digest,
    pub tar_size: u64,
    pub entries: u64,
    /// Bytes of file content in it.
    pub content_bytes: u64,
}

/// Writes the tree at `dir` as a layer tar compressed with `compression` into `out`.
/// `skip(path)`: leave this entry (and all below it) out; paths are relative, `/`-separated.
pub fn write_layer<W: Write>(
    dir: &Path,
    compression: Compression,
    out: W,
    skip: &dyn Fn(&str) -> bool,
) -> Result<(LayerTar, W), Error> {
    let root = file::open_dir(dir).map_err(|e| io_error(dir, e))?;
    let tee = Tee { hasher: Hasher::new(), out: Encoder::new(compression, out).map_err(|e| io_error(dir, e))? };
    let mut builder = tar::Builder::new(tee);
    builder.follow_symlinks(false);
    let mut walk = Walk { builder, links: HashMap::new(), entries: 0, content_bytes: 0, skip, top: dir };
    walk.dir(&root, "")?;
    let tee = walk.builder.into_inner().map_err(|e| io_error(dir, e))?;
    let out = tee.out.finish().map_err(|e| io_error(dir, e))?;
    let stats = LayerTar {
        diff_id: tee.hasher.digest(),
        tar_size: tee.hasher.len,
        entries: walk.entries,
        content_bytes: walk.content_bytes,
    };
    Ok((stats, out))
}

struct Walk<'a, W: Write> {
    builder: tar::Builder<Tee<W>>,
    /// Files with more than one link already written: (device, inode) → path.
    links: HashMap<(u64, u64), String>,
    entries: u64,
    content_bytes: u64,
    skip: &'a dyn Fn(&str) -> bool,
    top: &'a Path,
}

impl<W: Write> Walk<'_, W> {
    fn err(&self, path: &str, e: impl std::fmt::Display) -> Error {
        Error::msg(format!("{}: {e}", self.top.join(path).display()))
    }

    fn dir(&mut self, dir: &OwnedFd, prefix: &str) -> Result<(), Error> {
        let mut names = file::read_dir_names(dir).map_err(|e| self.err(prefix, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let rel = format!("{prefix}{}", name.to_string_lossy());
            if std::str::from_utf8(name.as_bytes()).is_err() {
                return Err(self.err(&rel, "a name that is not UTF-8 cannot be written to a layer"));
            }
            if (self.skip)(&rel) {
                continue;
            }
            self.entry(dir, &name, &rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &OwnedFd, name: &CStr, rel: &str) -> Result<(), Error> {
        let st = file::lstatat(dir, name).map_err(|e| self.err(rel, e))?;
        let kind = st.st_mode & libc::S_IFMT;
        let mut header = tar::Header::new_gnu();
        header.set_mode(st.st_mode & 0o7777);
        header.set_uid(st.st_uid as u64);
        header.set_gid(st.st_gid as u64);
        header.set_mtime(st.st_mtime.max(0) as u64);
        header.set_size(0);
        self.entries += 1;
        match kind {
            libc::S_IFCHR if st.st_rdev == 0 => {
                // An overlay whiteout: the OCI form.
                let (parent, base) = rel.rsplit_once('/').map_or(("", rel), |(p, b)| (p, b));
                let path = if parent.is_empty() { format!(".wh.{base}") } else { format!("{parent}/.wh.{base}") };
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o600);
                header.set_uid(0);
                header.set_gid(0);
                self.append(&mut header, &path, io::empty())?;
            }
            libc::S_IFDIR => {
                let fd = file::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
                    .map_err(|e| self.err(rel, e))?;
                let xattrs = self.xattrs(&fd, rel)?;
                let opaque = xattrs.iter().any(|(k, v)| k.as_c_str() == OPAQUE_XATTR && v == b"y");
                self.pax(&xattrs, rel)?;
                header.set_entry_type(tar::EntryType::Directory);
                self.append(&mut header, &format!("{rel}/"), io::empty())?;
                if opaque {
                    let mut wh = tar::Header::new_gnu();
                    wh.set_entry_type(tar::EntryType::Regular);
                    wh.set_mode(0o600);
                    wh.set_uid(0);
                    wh.set_gid(0);
                    wh.set_mtime(st.st_mtime.max(0) as u64);
                    wh.set_size(0);
                    self.entries += 1;
                    self.append(&mut wh, &format!("{rel}/.wh..wh..opq"), io::empty())?;
                }
                self.dir(&fd, &format!("{rel}/"))?;
            }
            libc::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        header.set_entry_type(tar::EntryType::Link);
                        self.builder.append_link(&mut header, rel, &first).map_err(|e| self.err(rel, e))?;
                        return Ok(());
                    }
                    self.links.insert(key, rel.to_string());
                }
                let fd = file::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).map_err(|e| self.err(rel, e))?;
                let xattrs = self.xattrs(&fd, rel)?;
                self.pax(&xattrs, rel)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(st.st_size as u64);
                // Exactly the size stat gave, even if the file changes meanwhile.
                let data = Exact { inner: std::fs::File::from(fd).take(st.st_size as u64), left: st.st_size as u64 };
                self.append(&mut header, rel, data)?;
                self.content_bytes += st.st_size as u64;
            }
            libc::S_IFLNK => {
                let target = file::readlinkat(dir, name).map_err(|e| self.err(rel, e))?;
                header.set_entry_type(tar::EntryType::Symlink);
                self.builder
                    .append_link(&mut header, rel, Path::new(OsStr::from_bytes(&target)))
                    .map_err(|e| self.err(rel, e))?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                header.set_entry_type(match kind {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                if kind != libc::S_IFIFO {
                    header.set_device_major(libc::major(st.st_rdev)).map_err(|e| self.err(rel, e))?;
                    header.set_device_minor(libc::minor(st.st_rdev)).map_err(|e| self.err(rel, e))?;
                }
                self.append(&mut header, rel, io::empty())?;
            }
            // Sockets have no place in a layer (as docker and buildah leave them out).
            _ => self.entries -= 1,
        }
        Ok(())
    }

    fn append(&mut self, header: &mut tar::Header, path: &str, data: impl Read) -> Result<(), Error> {
        self.builder.append_data(header, path, data).map_err(|e| self.err(path, e))
    }

    /// The xattrs a layer keeps: all but overlayfs' own (its opaque mark is a whiteout).
    fn xattrs(&self, fd: &OwnedFd, rel: &str) -> Result<Vec<(CString, Vec<u8>)>, Error> {
        let all = file::fxattrs(fd.as_fd()).map_err(|e| self.err(rel, format!("xattrs: {e}")))?;
        for (k, _) in &all {
            let k = k.to_bytes();
            if k == b"trusted.overlay.redirect" || k == b"trusted.overlay.metacopy" {
                return Err(self.err(
                    rel,
                    format!(
                        "{} is set: the snapshot was mounted with redirect_dir or metacopy, which a layer cannot carry",
                        String::from_utf8_lossy(k)
                    ),
                ));
            }
        }
        Ok(all)
    }

    fn pax(&mut self, xattrs: &[(CString, Vec<u8>)], rel: &str) -> Result<(), Error> {
        let kept: Vec<(String, &[u8])> = xattrs
            .iter()
            .filter(|(k, _)| !k.to_bytes().starts_with(b"trusted.overlay."))
            .map(|(k, v)| (format!("SCHILY.xattr.{}", k.to_string_lossy()), v.as_slice()))
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(kept.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(|e| self.err(rel, format!("xattrs: {e}")))
    }
}

/// Removes overlayfs' own bookkeeping (`trusted.overlay.*` but the opaque mark) from a tree
/// in the layer format, so an overlay upper directory can become a layer directory as an
/// unpacked layer would be. Symlinks are never followed.
pub fn strip_overlay_bookkeeping(dir: &Path) -> Result<(), Error> {
    let root = file::open_dir(dir).map_err(|e| io_error(dir, e))?;
    strip_in(&root, dir)
}

fn strip_in(fd: &OwnedFd, path: &Path) -> Result<(), Error> {
    for (k, _) in file::fxattrs(fd).map_err(|e| io_error(path, e))? {
        if k.to_bytes().starts_with(b"trusted.overlay.") && k.as_c_str() != OPAQUE_XATTR {
            file::fremovexattr(fd, &k).map_err(|e| io_error(path, e))?;
        }
    }
    for name in file::read_dir_names(fd).map_err(|e| io_error(path, e))? {
        let st = file::lstatat(fd, &name).map_err(|e| io_error(path, e))?;
        let child = path.join(OsStr::from_bytes(name.as_bytes()));
        let flags = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => libc::O_RDONLY | libc::O_DIRECTORY,
            libc::S_IFREG => libc::O_RDONLY,
            _ => continue,
        };
        let c = file::openat(fd, &name, flags | libc::O_NOFOLLOW, 0).map_err(|e| io_error(&child, e))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            strip_in(&c, &child)?;
        } else {
            for (k, _) in file::fxattrs(&c).map_err(|e| io_error(&child, e))? {
                if k.to_bytes().starts_with(b"trusted.overlay.") {
                    file::fremovexattr(&c, &k).map_err(|e| io_error(&child, e))?;
                }
            }
        }
    }
    Ok(())
}

/// Reads exactly `left` bytes: a file that shrank meanwhile is padded with zeros, so the tar
/// stays well-formed (the header's size was written first).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The tar stream: hashed (the diff ID) and then compressed into the output.
struct Tee<W: Write> {
    hasher: Hasher,
    out: Encoder<W>,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A compressing writer that must be finished (its trailer written).
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(compression: Compression, out: W) -> io::Result<Encoder<W>> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            // Level 6 as docker and buildah use: a layer is written once and pulled often.
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::new(6))),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}
