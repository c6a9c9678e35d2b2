//! A streaming tar reader that owns the archive's framing, so that what it keeps in memory is
//! bounded: GNU long names and long links and PAX extended headers are read only up to
//! `MAX_EXTENSION` bytes (1 MiB, as Go's archive/tar), and a bigger one is refused before its
//! body is read. The `tar` crate parses the 512-byte headers (its `Header` type); its own
//! iterator reads extension bodies whole and unbounded, and its raw mode would lose PAX
//! `size` overrides (files over 8 GiB written by Go) and GNU sparse maps, so the framing is
//! done here.
//!
//! Supported: ustar, GNU and PAX headers; GNU long names and links; PAX `path`, `linkpath`
//! and `size` (other records are handed to the caller); sparse files in the old GNU format
//! and in the three PAX formats of GNU tar (0.0 and 0.1, whose map is in PAX records, and
//! 1.0, whose map precedes the data), read as data and holes (`read_chunk`) or with holes
//! as zeros (`read_data`). Any other sparse format is refused. PAX global headers are
//! skipped.

use std::io::{self, Read};

/// Largest GNU long name / long link / PAX extended header accepted (bytes).
pub const MAX_EXTENSION: u64 = 1 << 20;

/// Most GNU sparse extension blocks after one header (21 map entries each).
const MAX_SPARSE_BLOCKS: usize = (MAX_EXTENSION / 512) as usize;

const BLOCK: u64 = 512;

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// PAX records: (key, value), in the order of the header.
pub type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry's header with its extensions applied.
pub struct EntryHeader {
    /// The entry's own 512-byte header (mode, owner, times, device numbers...).
    pub header: tar::Header,
    pub kind: tar::EntryType,
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// Bytes of content (for a sparse file: its full size, holes included).
    pub size: u64,
    /// Bytes of content stored in the archive (for a sparse file: its data, without holes).
    pub stored: u64,
    /// A sparse file (its content comes as data and holes).
    pub sparse: bool,
    /// The records of the entry's PAX extended header, in order.
    pub pax: PaxRecords,
}

impl EntryHeader {
    /// The last value of PAX record `key`.
    pub fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        self.pax.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

/// A sparse file's map: data segments (offset in the file, length), in order.
struct Sparse {
    segments: Vec<(u64, u64)>,
    next: usize,
    /// Position in the file being produced.
    pos: u64,
    real_size: u64,
}

/// A piece of an entry's content (see `TarStream::read_chunk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes were read into the buffer.
    Data(usize),
    /// A hole of this many bytes: zeros that are not stored (a sparse file's).
    Hole(u64),
}

/// Most entries of a PAX 1.0 sparse map, and bytes of the map (it precedes the data).
const MAX_SPARSE_MAP: u64 = MAX_EXTENSION;

pub struct TarStream<R> {
    inner: R,
    /// Stored bytes of the current entry not read yet, and the padding after them.
    left: u64,
    pad: u64,
    sparse: Option<Sparse>,
    /// The current entry's path, for errors.
    current: Vec<u8>,
    done: bool,
}

/// Parses PAX records (`<length> <key>=<value>\n`; values may hold newlines).
pub fn parse_pax(mut b: &[u8]) -> Result<PaxRecords, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.iter().all(|c| *c == 0) {
            break; // padding some writers leave
        }
        let sp = b.iter().position(|c| *c == b' ').ok_or("malformed PAX record (no length)")?;
        let len: usize = std::str::from_utf8(&b[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("malformed PAX record length {:?}", show(&b[..sp])))?;
        if len <= sp + 1 || len > b.len() || b[len - 1] != b'\n' {
            return Err(format!("malformed PAX record (length {len})"));
        }
        let rec = &b[sp + 1..len - 1];
        let eq = rec.iter().position(|c| *c == b'=').ok_or("malformed PAX record (no '=')")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        b = &b[len..];
    }
    Ok(out)
}

/// Checks a sparse map against the file's size and the data stored: segments in order, not
/// overlapping, within the file, their lengths adding up to the data. Old GNU archives also
/// store every segment but the last in whole blocks.
fn check_sparse(
    name: &str,
    segments: Vec<(u64, u64)>,
    real_size: u64,
    stored: u64,
    blocks: bool,
) -> io::Result<Sparse> {
    let (mut end, mut data) = (0u64, 0u64);
    for (i, (off, len)) in segments.iter().enumerate() {
        if *off < end {
            return Err(bad(format!("entry {name:?}: sparse map segments out of order or overlapping")));
        }
        if blocks && *len != 0 && i > 0 && data % BLOCK != 0 {
            return Err(bad(format!("entry {name:?}: sparse data not aligned to 512 bytes")));
        }
        end = off.checked_add(*len).ok_or_else(|| bad(format!("entry {name:?}: sparse map overflows")))?;
        if end > real_size {
            return Err(bad(format!(
                "entry {name:?}: sparse map segment at {off} (+{len}) ends past the file's size {real_size}"
            )));
        }
        data += len;
    }
    if data != stored {
        return Err(bad(format!(
            "entry {name:?}: sparse map covers {end} bytes with {data} of data, the header says {real_size} with {stored}"
        )));
    }
    Ok(Sparse { segments, next: 0, pos: 0, real_size })
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// A name from a GNU long-name body: up to the first NUL (as Go reads it).
fn c_string(mut b: Vec<u8>) -> Vec<u8> {
    if let Some(i) = b.iter().position(|c| *c == 0) {
        b.truncate(i);
    }
    b
}

impl<R: Read> TarStream<R> {
    pub fn new(inner: R) -> TarStream<R> {
        TarStream { inner, left: 0, pad: 0, sparse: None, current: Vec::new(), done: false }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads a whole block; false at a clean end of the stream (no byte read).
    fn read_block(&mut self, buf: &mut [u8; 512]) -> io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside a header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the archive ends inside entry {:?}", show(&self.current)),
                    ))
                }
                Ok(k) => n -= k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_body(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut body = vec![0u8; size as usize];
        self.inner.read_exact(&mut body).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), format!("the archive ends inside entry {:?}", show(&self.current)))
            } else {
                e
            }
        })?;
        self.skip(padding(size))?;
        Ok(body)
    }

    /// The next entry, after skipping what is left of the current one; None at the end of
    /// the archive (an all-zero block, or the end of the stream between entries).
    pub fn next_entry(&mut self) -> io::Result<Option<EntryHeader>> {
        if self.done {
            return Ok(None);
        }
        let rest = self.left + self.pad;
        self.skip(rest)?;
        (self.left, self.pad, self.sparse) = (0, 0, None);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let mut h = tar::Header::new_old();
            let more = self.read_block(h.as_mut_bytes())?;
            if !more || h.as_bytes().iter().all(|b| *b == 0) {
                self.done = true;
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(bad(format!(
                        "the archive ends after the extension header {:?}, without the entry it describes",
                        show(&self.current)
                    )));
                }
                return Ok(None);
            }
            self.current = h.path_bytes().into_owned();
            let sum = h.as_bytes()[..148].iter().chain(&h.as_bytes()[156..]).map(|b| *b as u32).sum::<u32>() + 8 * 32;
            if h.cksum().ok() != Some(sum) {
                return Err(bad(format!("entry {:?}: header checksum mismatch", show(&self.current))));
            }
            let kind = h.entry_type();
            let hsize = h.entry_size().map_err(|e| bad(format!("entry {:?}: size: {e}", show(&self.current))))?;
            let what = match kind {
                tar::EntryType::GNULongName => Some("GNU long name"),
                tar::EntryType::GNULongLink => Some("GNU long link"),
                tar::EntryType::XHeader => Some("PAX extended header"),
                _ => None,
            };
            if let Some(what) = what {
                if hsize > MAX_EXTENSION {
                    return Err(bad(format!(
                        "entry {:?}: {what} of {hsize} bytes is over the {MAX_EXTENSION}-byte limit",
                        show(&self.current)
                    )));
                }
                let slot = match kind {
                    tar::EntryType::GNULongName => &mut long_name,
                    tar::EntryType::GNULongLink => &mut long_link,
                    _ => &mut pax,
                };
                if slot.is_some() {
                    return Err(bad(format!("entry {:?}: a second {what} for the same entry", show(&self.current))));
                }
                *slot = Some(self.read_body(hsize)?);
                continue;
            }
            if kind == tar::EntryType::XGlobalHeader {
                self.skip(hsize + padding(hsize))?;
                continue;
            }

            let records = match &pax {
                Some(p) => parse_pax(p).map_err(|e| bad(format!("entry {:?}: {e}", show(&self.current))))?,
                None => Vec::new(),
            };
            let value = |key: &[u8]| records.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let path = match long_name {
                Some(n) => c_string(n),
                None => value(b"path").unwrap_or_else(|| self.current.clone()),
            };
            self.current = path.clone();
            let link = match long_link {
                Some(l) => Some(c_string(l)),
                None => value(b"linkpath").or_else(|| h.link_name_bytes().map(|l| l.into_owned())),
            };
            let mut stored = hsize;
            if let Some(s) = value(b"size") {
                stored = std::str::from_utf8(&s)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(format!("entry {:?}: invalid PAX size {:?}", show(&path), show(&s))))?;
            }
            (self.left, self.pad) = (stored, padding(stored));
            let pax_sparse = records.iter().any(|(k, _)| k.starts_with(b"GNU.sparse."));
            let mut path = path;
            let sparse = if kind == tar::EntryType::GNUSparse {
                if pax_sparse {
                    return Err(bad(format!(
                        "entry {:?}: an old GNU sparse header with GNU.sparse PAX records",
                        show(&path)
                    )));
                }
                Some(self.sparse_map(&h, stored)?)
            } else if pax_sparse {
                if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
                    return Err(bad(format!("entry {:?}: GNU.sparse PAX records on a {kind:?} entry", show(&path))));
                }
                if let Some(n) = value(b"GNU.sparse.name") {
                    path = n;
                    self.current = path.clone();
                }
                Some(self.pax_sparse_map(&records)?)
            } else {
                None
            };
            let (size, stored) = match &sparse {
                Some(sp) => (sp.real_size, self.left),
                None => (stored, stored),
            };
            let is_sparse = sparse.is_some();
            self.sparse = sparse;
            return Ok(Some(EntryHeader {
                header: h,
                kind,
                path,
                link,
                size,
                stored,
                sparse: is_sparse,
                pax: records,
            }));
        }
    }

    /// Reads an old-GNU sparse map (in the header, then in extension blocks) and checks it
    /// against the stored size: segments in order, not overlapping, within the file.
    fn sparse_map(&mut self, h: &tar::Header, stored: u64) -> io::Result<Sparse> {
        let name = show(&self.current);
        let gnu = h.as_gnu().ok_or_else(|| bad(format!("entry {name:?}: sparse entry without a GNU header")))?;
        let real_size = gnu.real_size().map_err(|e| bad(format!("entry {name:?}: {e}")))?;
        let mut segments = Vec::new();
        let mut add = |s: &tar::GnuSparseHeader| -> io::Result<()> {
            if s.is_empty() {
                return Ok(());
            }
            let off = s.offset().map_err(|e| bad(format!("entry {name:?}: sparse map: {e}")))?;
            let len = s.length().map_err(|e| bad(format!("entry {name:?}: sparse map: {e}")))?;
            segments.push((off, len));
            Ok(())
        };
        for s in &gnu.sparse {
            add(s)?;
        }
        let mut extended = gnu.is_extended();
        let mut blocks = 0;
        while extended {
            blocks += 1;
            if blocks > MAX_SPARSE_BLOCKS {
                return Err(bad(format!("entry {name:?}: more than {MAX_SPARSE_BLOCKS} sparse map blocks")));
            }
            let mut ext = tar::GnuExtSparseHeader::new();
            if !self.read_block(ext.as_mut_bytes())? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("entry {name:?}: truncated sparse map"),
                ));
            }
            for s in &ext.sparse {
                add(s)?;
            }
            extended = ext.is_extended();
        }
        check_sparse(&name, segments, real_size, stored, true)
    }

    /// Reads the map of a sparse file in one of GNU tar's PAX formats (the records were
    /// checked to be on a regular file): 1.0 (`GNU.sparse.major=1`, `minor=0`; the map is in
    /// the data, before the file's own), 0.1 (`GNU.sparse.map`), 0.0 (repeated
    /// `GNU.sparse.offset` / `GNU.sparse.numbytes`). Any other version is refused.
    fn pax_sparse_map(&mut self, records: &PaxRecords) -> io::Result<Sparse> {
        let name = show(&self.current);
        let value = |key: &[u8]| records.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_slice());
        let number = |what: &str, v: &[u8]| -> io::Result<u64> {
            std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("entry {name:?}: invalid {what} {:?}", show(v))))
        };
        let real_size = match value(b"GNU.sparse.realsize").or_else(|| value(b"GNU.sparse.size")) {
            Some(v) => number("GNU.sparse.realsize", v)?,
            None => return Err(bad(format!("entry {name:?}: GNU sparse records without the file's size"))),
        };
        let mut segments = Vec::new();
        match (value(b"GNU.sparse.major"), value(b"GNU.sparse.minor")) {
            (Some(b"1"), Some(b"0")) => {
                // Decimal numbers, one per line: the count, then offset and length pairs;
                // padded with NULs to a block boundary.
                let mut nums: Vec<u64> = Vec::new();
                let mut digits: Vec<u8> = Vec::new();
                let mut count: Option<u64> = None;
                let mut read = 0u64;
                while count.map(|c| (nums.len() as u64) < c.saturating_mul(2).saturating_add(1)).unwrap_or(true) {
                    if read >= MAX_SPARSE_MAP {
                        return Err(bad(format!("entry {name:?}: sparse map over {MAX_SPARSE_MAP} bytes")));
                    }
                    let mut block = [0u8; BLOCK as usize];
                    let mut got = 0;
                    while got < block.len() {
                        match self.read_stored(&mut block[got..]) {
                            Ok(0) => {
                                return Err(bad(format!("entry {name:?}: the sparse map runs past the entry's data")))
                            }
                            Ok(n) => got += n,
                            Err(e) => return Err(io::Error::new(e.kind(), format!("entry {name:?}: sparse map: {e}"))),
                        }
                    }
                    read += BLOCK;
                    for &b in block.iter() {
                        if count.map(|c| (nums.len() as u64) >= c.saturating_mul(2).saturating_add(1)).unwrap_or(false)
                        {
                            break;
                        }
                        if b == b'\n' {
                            nums.push(number("sparse map number", &digits)?);
                            digits.clear();
                            if count.is_none() {
                                count = Some(nums[0]);
                            }
                        } else {
                            digits.push(b);
                            if digits.len() > 20 {
                                return Err(bad(format!("entry {name:?}: invalid sparse map number")));
                            }
                        }
                    }
                }
                segments.extend(nums[1..].chunks(2).map(|p| (p[0], p[1])));
            }
            (None, None) => {
                if let Some(map) = value(b"GNU.sparse.map") {
                    let nums = map
                        .split(|b| *b == b',')
                        .map(|v| number("GNU.sparse.map value", v))
                        .collect::<io::Result<Vec<u64>>>()?;
                    if nums.len() % 2 != 0 {
                        return Err(bad(format!("entry {name:?}: GNU.sparse.map has an odd number of values")));
                    }
                    segments.extend(nums.chunks(2).map(|p| (p[0], p[1])));
                } else {
                    let mut offset = None;
                    for (k, v) in records {
                        match k.as_slice() {
                            b"GNU.sparse.offset" if offset.is_none() => offset = Some(number("GNU.sparse.offset", v)?),
                            b"GNU.sparse.numbytes" if offset.is_some() => {
                                segments.push((offset.take().unwrap_or(0), number("GNU.sparse.numbytes", v)?))
                            }
                            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                                return Err(bad(format!(
                                    "entry {name:?}: GNU.sparse.offset and GNU.sparse.numbytes do not alternate"
                                )))
                            }
                            _ => {}
                        }
                    }
                    if offset.is_some() || segments.is_empty() {
                        return Err(bad(format!("entry {name:?}: GNU sparse records without a complete map")));
                    }
                }
                if let Some(n) = value(b"GNU.sparse.numblocks") {
                    if number("GNU.sparse.numblocks", n)? != segments.len() as u64 {
                        return Err(bad(format!(
                            "entry {name:?}: GNU.sparse.numblocks says {} segments, the map has {}",
                            show(n),
                            segments.len()
                        )));
                    }
                }
            }
            (major, minor) => {
                return Err(bad(format!(
                    "entry {name:?}: unsupported GNU sparse format version {}.{}",
                    show(major.unwrap_or(b"?")),
                    show(minor.unwrap_or(b"?"))
                )))
            }
        }
        check_sparse(&name, segments, real_size, self.left, false)
    }

    fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside entry {:?} ({} bytes missing)", show(&self.current), self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }

    /// Reads the current entry's content (holes of a sparse file as zeros).
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.read_chunk(buf)? {
            None => Ok(0),
            Some(Chunk::Data(n)) => Ok(n),
            Some(Chunk::Hole(h)) => {
                // The hole was skipped whole; give back what fits as zeros.
                let n = buf.len().min(h.min(usize::MAX as u64) as usize);
                buf[..n].fill(0);
                if let Some(sp) = &mut self.sparse {
                    sp.pos -= h - n as u64;
                }
                Ok(n)
            }
        }
    }

    /// The next piece of the current entry's content: data read into `buf`, or a hole (a
    /// sparse file's bytes that are zeros and not stored: to be skipped, not written); None
    /// at its end.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> io::Result<Option<Chunk>> {
        let Some(mut sp) = self.sparse.take() else {
            return Ok(match self.read_stored(buf)? {
                0 => None,
                n => Some(Chunk::Data(n)),
            });
        };
        let r = (|| {
            while let Some(&(off, len)) = sp.segments.get(sp.next) {
                if sp.pos < off {
                    let hole = off - sp.pos;
                    sp.pos = off;
                    return Ok(Some(Chunk::Hole(hole)));
                }
                if sp.pos < off + len {
                    let n = buf.len().min((off + len - sp.pos).min(usize::MAX as u64) as usize);
                    let n = self.read_stored(&mut buf[..n])?;
                    sp.pos += n as u64;
                    return Ok(Some(Chunk::Data(n)));
                }
                sp.next += 1;
            }
            if sp.pos < sp.real_size {
                let hole = sp.real_size - sp.pos;
                sp.pos = sp.real_size;
                return Ok(Some(Chunk::Hole(hole)));
            }
            Ok(None)
        })();
        self.sparse = Some(sp);
        r
    }

    /// The current entry's content as a reader.
    pub fn data(&mut self) -> Data<'_, R> {
        Data(self)
    }
}

pub struct Data<'a, R>(&'a mut TarStream<R>);

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_with_newlines_in_values() {
        let recs = parse_pax(b"12 path=a/b\n22 SCHILY.xattr.u=x\ny\n").unwrap();
        assert_eq!(recs[0], (b"path".to_vec(), b"a/b".to_vec()));
        assert_eq!(recs[1], (b"SCHILY.xattr.u".to_vec(), b"x\ny".to_vec()));
        assert!(parse_pax(b"99 path=a\n").is_err());
        assert!(parse_pax(b"x path=a\n").is_err());
    }
}
