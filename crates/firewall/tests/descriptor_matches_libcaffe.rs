//! Proves that every field of `proto/caffe.proto` has the same number, label and type as in the
//! descriptor compiled into the real libcaffe (Debian bullseye's libcaffe1), and vice versa.

mod common;

use std::collections::BTreeMap;

use caffe_sandbox_firewall::proto::DESCRIPTOR_SET_BYTES;
use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

/// Offsets of top-level field boundaries of a plausible serialized FileDescriptorProto at `start`.
fn field_boundaries(buf: &[u8], start: usize) -> Vec<usize> {
    let mut pos = start;
    let mut ends = Vec::new();
    let varint = |pos: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *buf.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    };
    while let Some(key) = varint(&mut pos) {
        let (field, wire) = (key >> 3, key & 7);
        if !(1..=14).contains(&field) {
            break;
        }
        let ok = match wire {
            0 => varint(&mut pos).is_some(),
            2 => match varint(&mut pos) {
                Some(n) if pos + n as usize <= buf.len() => {
                    pos += n as usize;
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            break;
        }
        ends.push(pos);
    }
    ends
}

/// Find and decode the embedded `caffe.proto` descriptor in the shared library's bytes.
fn embedded_descriptor(so: &[u8]) -> FileDescriptorProto {
    let needle = b"\x0a\x0bcaffe.proto\x12\x05caffe";
    let start = so
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("serialized caffe.proto descriptor in libcaffe");
    // The array is followed by unrelated data; take the longest prefix of whole fields that decodes.
    for end in field_boundaries(so, start).into_iter().rev() {
        if let Ok(fd) = FileDescriptorProto::decode(&so[start..end]) {
            if fd.name() == "caffe.proto" && fd.message_type.len() > 50 {
                return fd;
            }
        }
    }
    panic!("could not decode the embedded descriptor");
}

/// Default value with floats normalised (protoc writes `1e-05` where protox writes `0.00001`).
fn default_of(f: &prost_types::FieldDescriptorProto) -> String {
    use prost_types::field_descriptor_proto::Type;
    match (f.r#type(), f.default_value.as_deref()) {
        (Type::Float | Type::Double, Some(v)) => v
            .parse::<f64>()
            .map_or_else(|_| v.to_owned(), |x| format!("{x:e}")),
        (_, v) => v.unwrap_or("(none)").to_owned(),
    }
}

type FieldSig = (
    i32,
    prost_types::field_descriptor_proto::Label,
    prost_types::field_descriptor_proto::Type,
    String,
    String,
    Option<bool>,
);

fn collect_messages(
    prefix: &str,
    msgs: &[DescriptorProto],
    out: &mut BTreeMap<String, BTreeMap<String, FieldSig>>,
    enums: &mut BTreeMap<String, BTreeMap<String, i32>>,
) {
    for m in msgs {
        let name = format!("{prefix}.{}", m.name());
        let fields = m
            .field
            .iter()
            .map(|f| {
                (
                    f.name().to_owned(),
                    (
                        f.number(),
                        f.label(),
                        f.r#type(),
                        f.type_name().to_owned(),
                        default_of(f),
                        f.options.as_ref().and_then(|o| o.packed),
                    ),
                )
            })
            .collect();
        out.insert(name.clone(), fields);
        collect_enums(&name, &m.enum_type, enums);
        collect_messages(&name, &m.nested_type, out, enums);
    }
}

fn collect_enums(
    prefix: &str,
    es: &[EnumDescriptorProto],
    out: &mut BTreeMap<String, BTreeMap<String, i32>>,
) {
    for e in es {
        out.insert(
            format!("{prefix}.{}", e.name()),
            e.value
                .iter()
                .map(|v| (v.name().to_owned(), v.number()))
                .collect(),
        );
    }
}

type Schema = (
    BTreeMap<String, BTreeMap<String, FieldSig>>,
    BTreeMap<String, BTreeMap<String, i32>>,
);

fn schema(fd: &FileDescriptorProto) -> Schema {
    let (mut m, mut e) = (BTreeMap::new(), BTreeMap::new());
    collect_messages("caffe", &fd.message_type, &mut m, &mut e);
    collect_enums("caffe", &fd.enum_type, &mut e);
    (m, e)
}

#[test]
fn descriptor_matches_libcaffe() {
    let prefix = std::env::var_os("CAFFE_PREFIX").map_or_else(
        || common::workspace().join(".cache/caffe/prefix"),
        Into::into,
    );
    let so = common::require(
        prefix.join("usr/lib/x86_64-linux-gnu/libcaffe.so.1.0.0"),
        "libcaffe.so.1.0.0",
        "run scripts/setup or set CAFFE_PREFIX",
    );
    let so = std::fs::read(so).expect("read libcaffe");
    let real = embedded_descriptor(&so);
    let ours = FileDescriptorSet::decode(DESCRIPTOR_SET_BYTES).expect("our descriptor set");
    let ours = ours
        .file
        .iter()
        .find(|f| f.name() == "caffe.proto")
        .expect("caffe.proto in our set");
    let (rm, re) = schema(&real);
    let (om, oe) = schema(ours);
    let mut fields = 0;
    for (msg, rf) in &rm {
        let of = om
            .get(msg)
            .unwrap_or_else(|| panic!("message {msg} missing from our caffe.proto"));
        for (name, sig) in rf {
            assert_eq!(
                of.get(name),
                Some(sig),
                "{msg}.{name}: (number, label, type, type_name, default, packed) differ"
            );
            fields += 1;
        }
        assert_eq!(
            of.len(),
            rf.len(),
            "{msg}: our copy has fields libcaffe lacks"
        );
    }
    assert_eq!(om.len(), rm.len(), "message sets differ");
    assert_eq!(oe, re, "enums differ");
    assert_eq!(real.syntax(), ours.syntax());
    assert!(fields > 400, "only {fields} fields compared");
    eprintln!(
        "{} messages, {fields} fields, {} enums identical",
        rm.len(),
        re.len()
    );
}
