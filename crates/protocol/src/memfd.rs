//! Tensors in sealed memfds: [`create_sealed_memfd`], [`read_sealed_tensor`],
//! [`read_sealed_bytes`].
//!
//! Readers check the seals *before* touching the data: with
//! `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL` the peer can no
//! longer truncate, grow or modify the file (F_SEAL_WRITE cannot even be set
//! while a writable shared mapping exists), so the size from `fstat` stays
//! true. Data is read with `pread`, never `mmap`, so even a file that
//! shrank could not raise SIGBUS in the reader.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{
    fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, FileType, MemfdFlags, SealFlags,
};
use rustix::io::{pread, pwrite, Errno};

use crate::error::{ProtocolError, Result};
use crate::limits::Limits;
use crate::message::TensorHeader;
use crate::text::display_name;

/// The seals every shared buffer must carry.
pub const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE)
    .union(SealFlags::SEAL);

/// A dense `f32` tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape.
    pub dims: Vec<usize>,
    /// `product(dims)` values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor, checking that `data.len() == product(dims)`.
    pub fn new(dims: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let expected = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ProtocolError::ShapeOverflow {
                what: "tensor".into(),
                dims: dims.iter().map(|&d| d as u64).collect(),
            })?;
        if data.len() != expected {
            return Err(ProtocolError::DataSizeMismatch {
                what: "tensor".into(),
                actual: (data.len() as u64).saturating_mul(4),
                expected: (expected as u64).saturating_mul(4),
            });
        }
        Ok(Tensor { dims, data })
    }

    /// The data as little-endian bytes (the memfd layout).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A [`TensorHeader`] for this tensor under `name` (dims must fit `u32`).
    pub fn header(&self, name: &str) -> Result<TensorHeader> {
        let dims = self
            .dims
            .iter()
            .enumerate()
            .map(|(axis, &d)| {
                u32::try_from(d).map_err(|_| ProtocolError::DimOutOfRange {
                    what: format!("tensor '{}'", display_name(name)),
                    axis,
                    value: d as u64,
                    max: u32::MAX,
                })
            })
            .collect::<Result<_>>()?;
        Ok(TensorHeader {
            name: name.to_owned(),
            dims,
        })
    }

    /// Writes the tensor into a new sealed memfd (see [`create_sealed_memfd`]).
    pub fn to_sealed_memfd(&self, name: &str) -> std::io::Result<OwnedFd> {
        create_sealed_memfd(name, &self.to_le_bytes())
    }
}

/// Creates a memfd (`MFD_CLOEXEC | MFD_ALLOW_SEALING`, plus
/// `MFD_NOEXEC_SEAL` where the kernel knows it) holding `data`, sealed with
/// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`.
///
/// The file offset stays at 0 (data is written with `pwrite`), so the
/// receiver may `read` it from the start. `name` is only a debugging label
/// (it appears in `/proc/*/fd`); NULs are replaced and it is shortened to
/// the kernel's limit.
pub fn create_sealed_memfd(name: &str, data: &[u8]) -> std::io::Result<OwnedFd> {
    let mut label: String = name.replace('\0', "_");
    while label.len() > 200 {
        label.pop();
    }
    let fd = new_memfd(&label)?;
    ftruncate(&fd, data.len() as u64)?;
    pwrite_all(fd.as_fd(), data, 0)?;
    fcntl_add_seals(&fd, REQUIRED_SEALS)?;
    Ok(fd)
}

/// A new memfd that can be sealed (`MFD_CLOEXEC | MFD_ALLOW_SEALING`, plus `MFD_NOEXEC_SEAL` where the kernel
/// knows it).
pub(crate) fn new_memfd(label: &str) -> std::io::Result<OwnedFd> {
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match rustix::fs::memfd_create(label, base | MemfdFlags::NOEXEC_SEAL) {
        // Kernels before 6.3 do not know MFD_NOEXEC_SEAL.
        Err(Errno::INVAL) => Ok(rustix::fs::memfd_create(label, base)?),
        r => Ok(r?),
    }
}

/// Writes all of `bytes` at `offset` with `pwrite` (the file offset stays where it is).
pub(crate) fn pwrite_all(fd: BorrowedFd<'_>, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < bytes.len() {
        match pwrite(fd, &bytes[done..], offset + done as u64) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn seal_names(seals: SealFlags) -> String {
    [
        (SealFlags::SHRINK, "F_SEAL_SHRINK"),
        (SealFlags::GROW, "F_SEAL_GROW"),
        (SealFlags::WRITE, "F_SEAL_WRITE"),
        (SealFlags::SEAL, "F_SEAL_SEAL"),
    ]
    .iter()
    .filter(|(f, _)| seals.contains(*f))
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join("|")
}

/// Checks that `fd` is a regular file carrying all [`REQUIRED_SEALS`] and
/// returns its size. A reader that maps such a file (instead of `pread`ing
/// it) cannot be hit by SIGBUS: the peer can no longer shrink or write it.
pub fn sealed_size(fd: BorrowedFd<'_>, what: &str) -> Result<u64> {
    check_sealed(fd, what)
}

fn check_sealed(fd: BorrowedFd<'_>, what: &str) -> Result<u64> {
    sealed_file_size(fd, what, REQUIRED_SEALS)
}

/// The size of `fd`, once it is known to be a regular file carrying at least the seals `required`.
pub(crate) fn sealed_file_size(fd: BorrowedFd<'_>, what: &str, required: SealFlags) -> Result<u64> {
    let seals = fcntl_get_seals(fd).map_err(|e| ProtocolError::NotMemfd {
        what: what.to_owned(),
        reason: format!("F_GET_SEALS failed: {e}"),
    })?;
    let missing = required.difference(seals);
    if !missing.is_empty() {
        return Err(ProtocolError::MissingSeals {
            what: what.to_owned(),
            missing: seal_names(missing),
        });
    }
    let st = fstat(fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(ProtocolError::NotMemfd {
            what: what.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    u64::try_from(st.st_size).map_err(|_| ProtocolError::NotMemfd {
        what: what.to_owned(),
        reason: "negative size".into(),
    })
}

/// Reads exactly `len` bytes at `offset` with `pread`, straight into the result (one copy, no staging buffer).
/// `what` names the file in the error when it ends early.
pub(crate) fn pread_vec(
    fd: BorrowedFd<'_>,
    what: &str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let done = out.len() as u64;
        match pread(fd, rustix::buffer::spare_capacity(&mut out), offset + done) {
            Ok(0) => {
                return Err(ProtocolError::DataSizeMismatch {
                    what: what.to_owned(),
                    actual: done,
                    expected: len as u64,
                })
            }
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.truncate(len);
    Ok(out)
}

/// The byte size of the tensor `header` describes, after checking its dims against `limits`.
fn tensor_byte_len(what: &str, header: &TensorHeader, limits: &Limits) -> Result<usize> {
    let elements = limits.check_shape(what, &header.dims)?;
    elements
        .checked_mul(4)
        .ok_or_else(|| ProtocolError::ShapeOverflow {
            what: what.to_owned(),
            dims: header.dims.iter().map(|&d| d.into()).collect(),
        })
}

/// Reads a tensor described by `header` from a sealed memfd.
///
/// In order: validates `header.dims` against `limits` (axes, each dim in
/// `1..=max_dim`, element cap, checked product and byte size); verifies the
/// fd carries all four seals (`F_GET_SEALS`) and is a regular file; checks
/// `fstat` size == `product(dims) * 4`; reads with `pread`; and, if
/// `limits.reject_non_finite`, rejects the first NaN/±Inf naming the tensor
/// and the flat index.
pub fn read_sealed_tensor(fd: impl AsFd, header: &TensorHeader, limits: &Limits) -> Result<Tensor> {
    let what = format!("tensor '{}'", display_name(&header.name));
    let expected = tensor_byte_len(&what, header, limits)?;
    let fd = fd.as_fd();
    let size = check_sealed(fd, &what)?;
    if size != expected as u64 {
        return Err(ProtocolError::DataSizeMismatch {
            what,
            actual: size,
            expected: expected as u64,
        });
    }
    tensor_from_le_bytes(header, limits, &pread_vec(fd, &what, 0, expected)?)
}

/// Builds the tensor described by `header` from little-endian bytes (e.g. a range of the input arena), with the
/// checks of [`read_sealed_tensor`]: `header.dims` against `limits`, exactly `product(dims) * 4` bytes, and no
/// NaN/±Inf if `limits.reject_non_finite`.
pub fn tensor_from_le_bytes(
    header: &TensorHeader,
    limits: &Limits,
    bytes: &[u8],
) -> Result<Tensor> {
    let what = format!("tensor '{}'", display_name(&header.name));
    let expected = tensor_byte_len(&what, header, limits)?;
    if bytes.len() != expected {
        return Err(ProtocolError::DataSizeMismatch {
            what,
            actual: bytes.len() as u64,
            expected: expected as u64,
        });
    }
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if limits.reject_non_finite {
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ProtocolError::NonFinite { what, index, value });
        }
    }
    Ok(Tensor {
        dims: header.dims.iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Reads all bytes of a sealed memfd of at most `max_len` bytes (e.g. an
/// encoded image), with the same seal checks as [`read_sealed_tensor`].
/// `what` names the buffer in errors.
pub fn read_sealed_bytes(fd: impl AsFd, what: &str, max_len: usize) -> Result<Vec<u8>> {
    let fd = fd.as_fd();
    let size = check_sealed(fd, what)?;
    if size > max_len as u64 {
        return Err(ProtocolError::TooLong {
            field: what.to_owned(),
            len: size,
            max: max_len,
        });
    }
    // size <= max_len, a usize.
    pread_vec(fd, what, 0, size as usize)
}
