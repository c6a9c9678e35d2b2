//! What ADD does beyond COPY: a local tar archive (plain, gzip, bzip2, xz or zstd, recognised
//! by its content as docker does) is unpacked into the destination directory, and an http(s)
//! URL is downloaded (never unpacked).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use berth_storage::{Compression, SizeLimit};

/// How a file is compressed, if it is an archive ADD unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    Tar,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The archive kind of the file at `path`: its compression by magic bytes, then a tar header
/// at the start of what it decompresses to. None: an ordinary file (copied as COPY would).
pub fn archive_kind(path: &Path) -> io::Result<Option<Archive>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut f, &mut magic)?;
    let magic = &magic[..n];
    let kind = if magic.starts_with(&[0x1f, 0x8b]) {
        Archive::Gzip
    } else if magic.starts_with(b"BZh") {
        Archive::Bzip2
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Archive::Xz
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Archive::Zstd
    } else {
        Archive::Tar
    };
    f.rewind()?;
    let mut header = [0u8; 512];
    let got = match kind {
        Archive::Xz => {
            // (lzma-rs decodes into a writer: the first block is enough to look at.)
            let mut out = Vec::new();
            let mut limited = LimitWriter { out: &mut out, left: 512 };
            let _ = lzma_rs::xz_decompress(&mut BufReader::new(f), &mut limited);
            let n = out.len().min(512);
            header[..n].copy_from_slice(&out[..n]);
            n
        }
        _ => match decoder(kind, f) {
            Ok(mut r) => read_up_to(&mut r, &mut header).unwrap_or(0),
            Err(_) => 0,
        },
    };
    Ok((got == 512 && is_tar_header(&header)).then_some(kind))
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Takes at most `left` bytes, then refuses more (which ends the decoder early).
struct LimitWriter<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
}

impl Write for LimitWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("enough"));
        }
        let n = buf.len().min(self.left);
        self.out.extend_from_slice(&buf[..n]);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A ustar/GNU/v7 header: its checksum (the bytes summed with the checksum field as spaces)
/// matches the octal number in that field.
fn is_tar_header(h: &[u8; 512]) -> bool {
    let field = &h[148..156];
    let text: String = field.iter().take_while(|b| **b != 0 && **b != b' ').map(|b| *b as char).collect();
    let Ok(want) = u32::from_str_radix(text.trim(), 8) else { return false };
    let sum: u32 =
        h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { b' ' as u32 } else { *b as u32 }).sum();
    sum == want && h[..100].iter().any(|b| *b != 0)
}

fn decoder(kind: Archive, f: File) -> io::Result<Box<dyn Read>> {
    Ok(match kind {
        Archive::Tar | Archive::Xz => Box::new(f),
        Archive::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f))),
        Archive::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(f))),
        Archive::Zstd => Box::new(zstd::stream::read::Decoder::new(f)?),
    })
}

/// Unpacks the archive at `path` into the directory `dest` (an open directory of the root
/// being built). `scratch`: a directory for an xz archive's decompressed copy.
pub fn unpack(
    path: &Path,
    kind: Archive,
    dest: &std::os::fd::OwnedFd,
    scratch: &Path,
    limit: &SizeLimit,
) -> Result<(), String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let f = File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let dest_path = PathBuf::from(format!("/proc/self/fd/{}", dest.as_raw_fd()));
    let mut reader: Box<dyn Read> = match kind {
        Archive::Xz => {
            let tmp = scratch.join("xz-decompressed.tar");
            let mut out = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            lzma_rs::xz_decompress(&mut BufReader::new(f), &mut out).map_err(|e| format!("{name}: xz: {e}"))?;
            let r = File::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            let _ = std::fs::remove_file(&tmp);
            Box::new(r)
        }
        _ => decoder(kind, f).map_err(|e| format!("{name}: {e}"))?,
    };
    berth_storage::unpack_within(&mut reader, Compression::None, &dest_path, &name, limit)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Downloads `url` into the directory `dir`: the file's path and the Last-Modified time it
/// gives (seconds), if any. `expected`: a `sha256:HEX` the content must have.
pub fn download(url: &str, dir: &Path, expected: Option<&str>) -> Result<(PathBuf, Option<i64>), String> {
    let resp = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .get(url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let modified = resp.header("Last-Modified").and_then(http_date);
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .unwrap_or("download")
        .to_string();
    let path = dir.join(&name);
    let mut out = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = berth_storage::digest::Hasher::new();
    let mut body = resp.into_reader();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = body.read(&mut buf).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(want) = expected {
        let got = hasher.digest().to_string();
        if got != want {
            return Err(format!("{url}: the content is {got}, not the --checksum {want}"));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(t) = modified {
        let _ = out.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64));
    }
    Ok((path, modified))
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`): seconds since the epoch.
fn http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as u32
        + 1;
    let rfc3339 = format!("{year}-{month:02}-{:02}T{time}Z", day.parse::<u32>().ok()?);
    berth_engine::time::parse_rfc3339(&rfc3339).map(|ns| (ns / 1_000_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "dir/file.txt", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn archives_are_recognised_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = tar_bytes();
        let write = |name: &str, data: &[u8]| {
            let p = tmp.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &tar[..], &mut xz).unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        assert_eq!(archive_kind(&write("a.tar", &tar)).unwrap(), Some(Archive::Tar));
        assert_eq!(archive_kind(&write("a.tgz", &gz.finish().unwrap())).unwrap(), Some(Archive::Gzip));
        assert_eq!(archive_kind(&write("a.tbz", &bz.finish().unwrap())).unwrap(), Some(Archive::Bzip2));
        assert_eq!(archive_kind(&write("a.txz", &xz)).unwrap(), Some(Archive::Xz));
        assert_eq!(archive_kind(&write("a.tzst", &zst)).unwrap(), Some(Archive::Zstd));
        assert_eq!(archive_kind(&write("plain.txt", b"just text, not an archive")).unwrap(), None);
        let mut gz_text = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz_text.write_all(&[b'x'; 1000]).unwrap();
        assert_eq!(
            archive_kind(&write("text.gz", &gz_text.finish().unwrap())).unwrap(),
            None,
            "gzip, but not of a tar"
        );
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date("yesterday"), None);
    }
}
