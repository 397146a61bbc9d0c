//! Sealed-memfd tensors: seals checked before use, sizes, shapes, NaN/Inf.

use std::os::fd::OwnedFd;

use caffe_sandbox_protocol::{
    create_sealed_memfd, read_sealed_bytes, read_sealed_tensor, Limits, ProtocolError, Tensor,
    TensorHeader,
};
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::io::{pread, pwrite, write, Errno};

fn header(name: &str, dims: &[u32]) -> TensorHeader {
    TensorHeader {
        name: name.into(),
        dims: dims.to_vec(),
    }
}

fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A memfd with `data` and exactly the `seals` given (none if empty).
fn memfd_with_seals(data: &[u8], seals: SealFlags) -> OwnedFd {
    let fd = memfd_create("test", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    write(&fd, data).unwrap();
    if !seals.is_empty() {
        fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

fn all_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL
}

#[test]
fn round_trip() {
    let t = Tensor::new(vec![2, 3], vec![0.0, 1.5, -2.0, 3.25, 1e-30, -0.0]).unwrap();
    let fd = t.to_sealed_memfd("prob").unwrap();
    let h = t.header("prob").unwrap();
    assert_eq!(h, header("prob", &[2, 3]));
    assert_eq!(read_sealed_tensor(&fd, &h, &Limits::default()).unwrap(), t);
}

#[test]
fn large_tensor_spans_many_read_chunks() {
    let n = 3 * 512 * 513; // > 3 MiB: several 1 MiB pread chunks, ragged end
    let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let t = Tensor::new(vec![3, 512, 513], data).unwrap();
    let fd = t.to_sealed_memfd("data").unwrap();
    let got = read_sealed_tensor(&fd, &t.header("data").unwrap(), &Limits::default()).unwrap();
    assert_eq!(got, t);
}

#[test]
fn created_memfd_is_really_sealed() {
    let fd = create_sealed_memfd("x", b"abcdefgh").unwrap();
    assert_eq!(pwrite(&fd, b"z", 0), Err(Errno::PERM));
    assert_eq!(ftruncate(&fd, 4), Err(Errno::PERM));
    assert_eq!(ftruncate(&fd, 16), Err(Errno::PERM));
    assert_eq!(
        fcntl_add_seals(&fd, SealFlags::FUTURE_WRITE),
        Err(Errno::PERM)
    );
    // Offset left at 0: a plain read sees the data.
    let mut buf = [0u8; 8];
    assert_eq!(rustix::io::read(&fd, &mut buf).unwrap(), 8);
    assert_eq!(&buf, b"abcdefgh");
    // Close-on-exec.
    assert!(rustix::io::fcntl_getfd(&fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
}

#[test]
fn unsealed_memfd_is_refused() {
    let fd = memfd_with_seals(&le(&[1.0, 2.0]), SealFlags::empty());
    let err = read_sealed_tensor(&fd, &header("prob", &[2]), &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 'prob': memfd is missing seals F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_WRITE|F_SEAL_SEAL"
    );
}

#[test]
fn each_missing_seal_is_refused() {
    for missing in [
        SealFlags::SHRINK,
        SealFlags::GROW,
        SealFlags::WRITE,
        SealFlags::SEAL,
    ] {
        let fd = memfd_with_seals(&le(&[1.0, 2.0]), all_seals().difference(missing));
        match read_sealed_tensor(&fd, &header("prob", &[2]), &Limits::default()) {
            Err(ProtocolError::MissingSeals { missing: m, .. }) => {
                assert!(!m.contains('|'), "only one seal missing: {m}")
            }
            other => panic!("{missing:?}: {other:?}"),
        }
    }
}

#[test]
fn memfd_truncated_by_the_peer_is_refused() {
    // The peer wrote 4 floats, truncated to 2, then sealed: size mismatch.
    let fd = memfd_with_seals(&le(&[1.0, 2.0, 3.0, 4.0]), SealFlags::empty());
    ftruncate(&fd, 8).unwrap();
    fcntl_add_seals(&fd, all_seals()).unwrap();
    let err = read_sealed_tensor(&fd, &header("prob", &[4]), &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 'prob': memfd holds 8 bytes, shape requires 16"
    );
    // Unsealed: the peer could truncate it while we read, so it is refused
    // before any read (no SIGBUS, no short read race).
    let fd = memfd_with_seals(&le(&[1.0, 2.0, 3.0, 4.0]), SealFlags::empty());
    assert!(matches!(
        read_sealed_tensor(&fd, &header("prob", &[4]), &Limits::default()),
        Err(ProtocolError::MissingSeals { .. })
    ));
    ftruncate(&fd, 0).unwrap();
}

#[test]
fn data_length_must_match_shape() {
    let fd = create_sealed_memfd("t", &le(&[1.0, 2.0, 3.0])).unwrap();
    for dims in [&[2u32][..], &[4], &[1, 2]] {
        assert!(matches!(
            read_sealed_tensor(&fd, &header("t", dims), &Limits::default()),
            Err(ProtocolError::DataSizeMismatch { actual: 12, .. })
        ));
    }
    // Not a multiple of 4.
    let fd = create_sealed_memfd("t", &[0u8; 13]).unwrap();
    assert!(matches!(
        read_sealed_tensor(&fd, &header("t", &[3]), &Limits::default()),
        Err(ProtocolError::DataSizeMismatch {
            actual: 13,
            expected: 12,
            ..
        })
    ));
}

#[test]
fn non_memfds_are_refused() {
    let (r, _w) = rustix::pipe::pipe().unwrap();
    assert!(matches!(
        read_sealed_tensor(&r, &header("t", &[1]), &Limits::default()),
        Err(ProtocolError::NotMemfd { .. })
    ));
    let f = std::fs::File::open("/dev/null").unwrap();
    assert!(matches!(
        read_sealed_tensor(&f, &header("t", &[1]), &Limits::default()),
        Err(ProtocolError::NotMemfd { .. })
    ));
    let path = std::env::temp_dir().join(format!("cfsb-memfd-test-{}", std::process::id()));
    std::fs::write(&path, le(&[1.0])).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        read_sealed_tensor(&f, &header("t", &[1]), &Limits::default()),
        Err(ProtocolError::NotMemfd { .. } | ProtocolError::MissingSeals { .. })
    ));
}

#[test]
fn shape_is_checked_before_the_fd_is_touched() {
    // A pipe would be refused as NotMemfd; the shape error must come first.
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let l = Limits::default();
    assert!(matches!(
        read_sealed_tensor(&r, &header("t", &[0]), &l),
        Err(ProtocolError::DimOutOfRange { .. })
    ));
    assert!(matches!(
        read_sealed_tensor(&r, &header("t", &[1; 9]), &l),
        Err(ProtocolError::TooManyAxes { .. })
    ));
    let wide = Limits {
        max_dim: u32::MAX,
        max_elements: usize::MAX,
        ..l.clone()
    };
    assert!(matches!(
        read_sealed_tensor(&r, &header("t", &[u32::MAX; 3]), &wide),
        Err(ProtocolError::ShapeOverflow { .. })
    ));
    // product fits usize but * 4 bytes does not.
    assert!(matches!(
        read_sealed_tensor(&r, &header("t", &[u32::MAX, u32::MAX, 1 << 30]), &wide),
        Err(ProtocolError::ShapeOverflow { .. })
    ));
}

#[test]
fn nan_and_inf_are_rejected_with_name_and_index() {
    for (bad, shown) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let fd = create_sealed_memfd("p", &le(&[0.1, 0.2, 0.3, bad])).unwrap();
        let err =
            read_sealed_tensor(&fd, &header("prob", &[1, 4]), &Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("tensor 'prob': element 3 is {shown} (non-finite values are rejected)")
        );
        let lenient = Limits {
            reject_non_finite: false,
            ..Limits::default()
        };
        let t = read_sealed_tensor(&fd, &header("prob", &[1, 4]), &lenient).unwrap();
        assert_eq!(t.data[3].to_bits(), bad.to_bits());
    }
}

#[test]
fn sealed_bytes_are_capped() {
    let fd = create_sealed_memfd("img", &[7u8; 100]).unwrap();
    assert_eq!(
        read_sealed_bytes(&fd, "image", 100).unwrap(),
        vec![7u8; 100]
    );
    assert!(matches!(
        read_sealed_bytes(&fd, "image", 99),
        Err(ProtocolError::TooLong {
            len: 100,
            max: 99,
            ..
        })
    ));
    let fd = memfd_with_seals(&[1, 2, 3], SealFlags::GROW);
    assert!(matches!(
        read_sealed_bytes(&fd, "image", 100),
        Err(ProtocolError::MissingSeals { .. })
    ));
    let empty = create_sealed_memfd("e", &[]).unwrap();
    assert_eq!(
        read_sealed_bytes(&empty, "e", 10).unwrap(),
        Vec::<u8>::new()
    );
    let mut b = [0u8; 1];
    assert_eq!(pread(&empty, &mut b, 0).unwrap(), 0);
}

#[test]
fn tensor_new_checks_length() {
    assert!(matches!(
        Tensor::new(vec![2, 2], vec![0.0; 3]),
        Err(ProtocolError::DataSizeMismatch { .. })
    ));
    assert!(matches!(
        Tensor::new(vec![usize::MAX, 2], vec![]),
        Err(ProtocolError::ShapeOverflow { .. })
    ));
    let t = Tensor::new(vec![1usize << 33], vec![]);
    assert!(t.is_err());
}
