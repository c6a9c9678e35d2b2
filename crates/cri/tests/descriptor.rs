//! The wire contract: berthd's compiled `proto/runtime/v1/api.proto` against the descriptor of
//! the same API compiled into crictl 1.36 (Go programs embed the serialized
//! `FileDescriptorProto` of every proto file they are built with). Package, message, enum,
//! field and service definitions must be identical; only the file's name and Go options, and
//! the comments, may differ.
//!
//! kubelet v1.36.2 as built here (openshift/kubernetes with its carry patches) embeds the same
//! descriptor except that `KeyValue.value` is `bytes` there, `string` upstream and in crictl:
//! both are length-delimited, so the two agree on the wire for UTF-8 values.

mod support;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

/// Finds the `FileDescriptorProto` of package `runtime.v1` embedded in a Go binary.
fn embedded_descriptor(binary: &[u8]) -> Option<FileDescriptorProto> {
    // The descriptor starts with field 1, the file's name ("…/runtime/v1/api.proto"), then
    // field 2, the package.
    let needle = b"api.proto\x12\x0aruntime.v1";
    let mut from = 0;
    while let Some(at) = find(&binary[from..], needle).map(|i| i + from) {
        from = at + 1;
        let name_end = at + "api.proto".len();
        // Field 1's tag (0x0a) and its one-byte length just before the name.
        let Some(start) = (name_end.saturating_sub(200)..at)
            .rev()
            .find(|&i| binary[i] == 0x0a && binary[i + 1] < 0x80 && i + 2 + binary[i + 1] as usize == name_end)
        else {
            continue;
        };
        let end = top_level_end(binary, start);
        if let Ok(fd) = FileDescriptorProto::decode(&binary[start..end]) {
            if fd.package() == "runtime.v1" && fd.service.len() == 2 {
                return Some(fd);
            }
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The end of the length-delimited top-level fields (1 to 14, all of them strings, bytes or
/// messages in a proto3 file without public imports) that start at `start`.
fn top_level_end(b: &[u8], start: usize) -> usize {
    let varint = |mut i: usize| -> Option<(u64, usize)> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(i)?;
            i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((v, i));
            }
        }
        None
    };
    let mut i = start;
    loop {
        let Some((tag, j)) = varint(i) else { return i };
        if !(1..=14).contains(&(tag >> 3)) || tag & 7 != 2 {
            return i;
        }
        let Some((len, k)) = varint(j) else { return i };
        if k + len as usize > b.len() {
            return i;
        }
        i = k + len as usize;
    }
}

/// What the wire depends on: the file's name, its options (go_package) and the comments are
/// dropped; empty method options (protoc records `{}`, protox nothing) are the same as none.
fn normalize(mut f: FileDescriptorProto) -> FileDescriptorProto {
    f.name = None;
    f.options = None;
    f.source_code_info = None;
    for s in &mut f.service {
        for m in &mut s.method {
            if m.options.as_ref().is_some_and(|o| *o == Default::default()) {
                m.options = None;
            }
        }
    }
    f
}

#[test]
fn the_proto_matches_crictl_1_36() {
    let Some(crictl) = support::crictl() else { return };
    let binary = std::fs::read(&crictl).unwrap_or_else(|e| panic!("read {}: {e}", crictl.display()));
    let theirs = embedded_descriptor(&binary)
        .unwrap_or_else(|| panic!("no runtime.v1 descriptor found in {}", crictl.display()));
    let ours = FileDescriptorSet::decode(berth_cri::FILE_DESCRIPTOR_SET).unwrap();
    let ours = ours.file.into_iter().find(|f| f.package() == "runtime.v1").expect("runtime.v1 compiled");
    let (theirs, ours) = (normalize(theirs), normalize(ours));

    // Name each definition that differs, so a mistake is found without diffing 5000 lines.
    let mut diffs = Vec::new();
    let by_name = |v: &[DescriptorProto], n: &str| v.iter().find(|m| m.name() == n).cloned();
    for m in &theirs.message_type {
        match by_name(&ours.message_type, m.name()) {
            None => diffs.push(format!("message {} missing", m.name())),
            Some(o) if o != *m => diffs.push(format!("message {}:\n crictl {m:?}\n berthd {o:?}", m.name())),
            _ => {}
        }
    }
    for m in &ours.message_type {
        if by_name(&theirs.message_type, m.name()).is_none() {
            diffs.push(format!("message {} not in crictl's API", m.name()));
        }
    }
    for e in &theirs.enum_type {
        match ours.enum_type.iter().find(|o| o.name() == e.name()) {
            None => diffs.push(format!("enum {} missing", e.name())),
            Some(o) if o != e => diffs.push(format!("enum {}:\n crictl {e:?}\n berthd {o:?}", e.name())),
            _ => {}
        }
    }
    for s in &theirs.service {
        match ours.service.iter().find(|o| o.name() == s.name()) {
            None => diffs.push(format!("service {} missing", s.name())),
            Some(o) if o != s => diffs.push(format!("service {}:\n crictl {s:?}\n berthd {o:?}", s.name())),
            _ => {}
        }
    }
    assert!(diffs.is_empty(), "berthd's api.proto differs from crictl's:\n{}", diffs.join("\n"));
    // Whatever the per-definition check missed (order, counts, syntax, package, extras).
    assert_eq!(theirs, ours);
}
