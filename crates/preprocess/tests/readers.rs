//! .npy, mean.binaryproto and labels readers on hostile input.

use caffe_sandbox_preprocess::{
    parse_binaryproto, parse_labels, parse_mean, parse_npy, BlobProto, BlobShape, Error,
};
use prost::Message;

/// A version-1 .npy file with `header` (padded with spaces to a multiple of
/// 64 bytes, newline-terminated, like numpy writes) and raw `data`.
fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_owned();
    let padded = (10 + h.len() + 1).div_ceil(64) * 64;
    while 10 + h.len() + 1 < padded {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(data);
    v
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn npy_err(bytes: &[u8]) -> String {
    match parse_npy(bytes, "mean.npy") {
        Err(e @ Error::Npy { .. }) => e.to_string(),
        other => panic!("expected an npy error, got {other:?}"),
    }
}

#[test]
fn npy_f4_and_f8() {
    let a = parse_npy(
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
            &f32s(&[1.0, 2.5, -3.0]),
        ),
        "m.npy",
    )
    .unwrap();
    assert_eq!(a.shape, vec![3]);
    assert_eq!(a.data, vec![1.0, 2.5, -3.0]);

    let d: Vec<u8> = [104.0f64, 117.0, 123.0, 0.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let a = parse_npy(
        &npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
            &d,
        ),
        "m.npy",
    )
    .unwrap();
    assert_eq!(a.shape, vec![2, 2]);
    assert_eq!(a.data, vec![104.0, 117.0, 123.0, 0.5]);
}

#[test]
fn npy_python2_long_suffix_key_order_and_version2() {
    let a = parse_npy(
        &npy(
            "{\"shape\": (1L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}",
            &f32s(&[1.0, 2.0]),
        ),
        "m.npy",
    )
    .unwrap();
    assert_eq!(a.shape, vec![1, 2]);

    // Version 2: 4-byte header length.
    let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n";
    let mut v = b"\x93NUMPY\x02\x00".to_vec();
    v.extend_from_slice(&(h.len() as u32).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(&f32s(&[7.0]));
    assert_eq!(parse_npy(&v, "m.npy").unwrap().data, vec![7.0]);
}

#[test]
fn npy_bad_header() {
    assert!(npy_err(b"NUMPY not really").contains("magic"));
    assert!(npy_err(b"\x93NUMPY\x01").contains("truncated"));
    assert!(npy_err(b"\x93NUMPY\x09\x00\x00\x00").contains("version 9"));
    // Declared header longer than the file.
    assert!(npy_err(b"\x93NUMPY\x01\x00\xff\x00{}").contains("truncated header"));
    // Header length over the cap (v2, 1 MiB).
    let mut v = b"\x93NUMPY\x02\x00".to_vec();
    v.extend_from_slice(&(1u32 << 20).to_le_bytes());
    assert!(npy_err(&v).contains("exceeds the cap"));
    for h in [
        "not a dict",
        "{'descr': '<f4', 'fortran_order': False}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
        "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
        "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} trailing",
        "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1,)}",
    ] {
        let e = npy_err(&npy(h, &f32s(&[1.0])));
        assert!(e.contains("header"), "{h}: {e}");
    }
}

#[test]
fn npy_wrong_dtype_and_order() {
    for d in ["<i4", ">f4", "<f2", "|u1", "<c8"] {
        let h = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': (1,), }}");
        let e = npy_err(&npy(&h, &[0; 8]));
        assert!(e.contains("not supported") && e.contains(d), "{e}");
    }
    let e = npy_err(&npy(
        "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
        &[0; 4],
    ));
    assert!(e.contains("fortran_order"), "{e}");
}

#[test]
fn npy_shape_data_mismatch() {
    // 4 values declared, 3 present.
    let e = npy_err(&npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
        &f32s(&[1., 2., 3.]),
    ));
    assert!(e.contains("needs 16 data bytes, the file has 12"), "{e}");
    // Trailing bytes are refused too.
    let e = npy_err(&npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &f32s(&[1., 2., 3.]),
    ));
    assert!(e.contains("needs 8 data bytes, the file has 12"), "{e}");
}

#[test]
fn npy_huge_shape_refused() {
    let e = npy_err(&npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }",
        &[],
    ));
    assert!(e.contains("cap of 16777216 elements"), "{e}");
    // Overflowing u64 is refused the same way, not wrapped.
    let e = npy_err(&npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (9999999999999999999, 9999999999999999999), }",
        &[],
    ));
    assert!(e.contains("cap"), "{e}");
    let e = npy_err(&npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
        &[0; 4],
    ));
    assert!(e.contains("axes"), "{e}");
}

#[test]
fn mean_npy_shapes() {
    let m = parse_mean(
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
            &f32s(&[1., 2., 3.]),
        ),
        "m.npy",
    )
    .unwrap();
    assert_eq!((m.channels, m.height, m.width), (3, 1, 1));
    let m = parse_mean(
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 2), }",
            &f32s(&[1., 2., 3., 4.]),
        ),
        "m.npy",
    )
    .unwrap();
    assert_eq!((m.channels, m.height, m.width), (2, 1, 2));
    assert_eq!(m.per_channel(), vec![1.5, 3.5]);
    // 2-D is not a mean image; NaN is refused.
    assert!(parse_mean(
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
            &f32s(&[1., 2., 3., 4.])
        ),
        "m.npy"
    )
    .is_err());
    let e = parse_mean(
        &npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &f32s(&[f32::NAN]),
        ),
        "m.npy",
    )
    .unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
}

#[test]
fn binaryproto_round_trip_shape() {
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let bytes = BlobProto::from_array(&[1, 3, 2, 2], &data).encode_to_vec();
    let a = parse_binaryproto(&bytes, "mean.binaryproto").unwrap();
    assert_eq!(a.shape, vec![1, 3, 2, 2]);
    assert_eq!(a.data, data);
    let m = parse_mean(&bytes, "mean.binaryproto").unwrap();
    assert_eq!((m.channels, m.height, m.width), (3, 2, 2));
}

#[test]
fn binaryproto_legacy_fields_and_double_data() {
    let blob = BlobProto {
        num: Some(1),
        channels: Some(3),
        height: Some(1),
        width: Some(1),
        double_data: vec![104.0, 117.0, 123.0],
        ..Default::default()
    };
    let a = parse_binaryproto(&blob.encode_to_vec(), "mean.binaryproto").unwrap();
    assert_eq!(a.shape, vec![1, 3, 1, 1]);
    assert_eq!(a.data, vec![104.0, 117.0, 123.0]);
}

#[test]
fn binaryproto_hand_encoded_bytes() {
    // Wire format written by hand, as Caffe writes it:
    // num=1 (08 01), channels=1 (10 01), height=1 (18 01), width=2 (20 02),
    // data packed (2a 08 <1.0f32> <2.0f32>).
    let mut b = vec![0x08, 0x01, 0x10, 0x01, 0x18, 0x01, 0x20, 0x02, 0x2a, 0x08];
    b.extend(f32s(&[1.0, 2.0]));
    let a = parse_binaryproto(&b, "mean.binaryproto").unwrap();
    assert_eq!(a.shape, vec![1, 1, 1, 2]);
    assert_eq!(a.data, vec![1.0, 2.0]);
}

#[test]
fn binaryproto_refusals() {
    let e = |bytes: &[u8]| {
        parse_binaryproto(bytes, "mean.binaryproto")
            .unwrap_err()
            .to_string()
    };
    // Count mismatch.
    let m = e(&BlobProto::from_array(&[1, 3, 2, 2], &[1.0; 11]).encode_to_vec());
    assert!(
        m.contains("needs 12 values, the blob has 11") && m.contains("mean.binaryproto"),
        "{m}"
    );
    // Negative and huge dimensions.
    let neg = BlobProto {
        shape: Some(BlobShape { dim: vec![1, -3] }),
        ..Default::default()
    };
    assert!(e(&neg.encode_to_vec()).contains("negative"));
    let huge = BlobProto {
        shape: Some(BlobShape {
            dim: vec![i64::MAX, i64::MAX],
        }),
        ..Default::default()
    };
    assert!(e(&huge.encode_to_vec()).contains("cap"));
    let deep = BlobProto {
        shape: Some(BlobShape { dim: vec![1; 9] }),
        ..Default::default()
    };
    assert!(e(&deep.encode_to_vec()).contains("axes"));
    // Not protobuf at all / truncated packed field.
    assert!(e(&[0xff, 0xff, 0xff]).contains("not a BlobProto"));
    assert!(e(&[0x2a, 0x40, 0, 0]).contains("not a BlobProto"));
}

#[test]
fn labels_basic() {
    let l = parse_labels(
        b"\xef\xbb\xbfcat\r\ndog, canine\n\n  bird\t \n",
        "labels.txt",
    )
    .unwrap();
    assert_eq!(l, vec!["cat", "dog, canine", "", "bird"]);
    assert!(parse_labels(b"", "labels.txt").unwrap().is_empty());
    assert_eq!(parse_labels(b"a", "labels.txt").unwrap(), vec!["a"]);
}

#[test]
fn labels_control_and_bidi_stripped() {
    let l = parse_labels(
        "ca\u{1b}[31mt\u{7}\nevil\u{202e}gpj.exe\n".as_bytes(),
        "labels.txt",
    )
    .unwrap();
    assert_eq!(l, vec!["ca[31mt", "evilgpj.exe"]);
}

#[test]
fn labels_caps() {
    let long = vec![b'x'; 1025];
    let e = parse_labels(&long, "labels.txt").unwrap_err().to_string();
    assert!(
        e.contains("line 1") && e.contains("1024") && e.contains("labels.txt"),
        "{e}"
    );
    assert!(parse_labels(&vec![b'x'; 1024], "labels.txt").is_ok());

    let many = "a\n".repeat(100_001);
    let e = parse_labels(many.as_bytes(), "labels.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("100000"), "{e}");
    assert_eq!(
        parse_labels("a\n".repeat(100_000).as_bytes(), "labels.txt")
            .unwrap()
            .len(),
        100_000
    );

    let e = parse_labels(b"ok\nbad \xff\n", "labels.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");
}
