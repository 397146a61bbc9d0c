//! Handing compiled filters to the worker through a sealed memfd.
//!
//! The supervisor writes a [`FilterBundle`] (listener filter + inference filter)
//! into a memfd sealed against writes, shrinking and growing
//! ([`sealed_memfd`]); the worker gets it as `--seccomp-fd 4` and reads it
//! with [`read_sealed`] + [`FilterBundle::from_bytes`]. libc only: available
//! without the `compile` feature.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Largest bundle accepted: two programs of at most `BPF_MAXINSNS` (4096)
/// instructions of 8 bytes, plus the header.
pub const MAX_BUNDLE_BYTES: usize = 16 + 2 * 4096 * 8;

const MAGIC: &[u8; 8] = b"CSSECBPF";
const VERSION: u32 = 1;

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// The two programs the worker installs: the listener filter at start, the
/// inference filter after load. Both are raw `struct sock_filter` arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterBundle {
    /// Installed with `SECCOMP_FILTER_FLAG_NEW_LISTENER` before any model byte.
    pub listener: Vec<u8>,
    /// Stacked without a listener after the model is loaded.
    pub inference: Vec<u8>,
}

impl FilterBundle {
    /// Serialises as `"CSSECBPF" | u32 version | u32 len1 | u32 len2 | prog1 | prog2`
    /// (little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.listener.len() + self.inference.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.listener.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.inference.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.listener);
        out.extend_from_slice(&self.inference);
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output, checking every length.
    pub fn from_bytes(b: &[u8]) -> io::Result<FilterBundle> {
        let bad =
            |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("seccomp bundle: {m}"));
        if b.len() < 20 || &b[..8] != MAGIC {
            return Err(bad("bad magic"));
        }
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        if word(8) != VERSION as usize {
            return Err(bad("unsupported version"));
        }
        let (l1, l2) = (word(12), word(16));
        if l1.checked_add(l2).and_then(|n| n.checked_add(20)) != Some(b.len()) {
            return Err(bad("length mismatch"));
        }
        Ok(FilterBundle {
            listener: b[20..20 + l1].to_vec(),
            inference: b[20 + l1..].to_vec(),
        })
    }
}

fn memfd(name: &CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create has no
    // other memory arguments.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An anonymous, close-on-exec, in-memory file.
pub fn anonymous_file(name: &str) -> io::Result<File> {
    let name =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(File::from(memfd(&name, libc::MFD_CLOEXEC)?))
}

/// Writes `bytes` into a new memfd and seals it (`F_SEAL_SEAL | SHRINK | GROW |
/// WRITE`). The fd is close-on-exec: the spawner must dup it onto the
/// worker's fd number.
pub fn sealed_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd(
        c"caffe-sandbox-seccomp",
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
    )?;
    let mut off = 0usize;
    while off < bytes.len() {
        // SAFETY: the pointer/length pair denotes the initialised tail of `bytes`.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                bytes[off..].as_ptr().cast(),
                bytes.len() - off,
                off as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        off += n as usize;
    }
    // SAFETY: fcntl with an int argument on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Reads a whole sealed memfd (at most `max` bytes), refusing one that lacks
/// the write/shrink/grow seals (its contents could change under the reader).
pub fn read_sealed(fd: BorrowedFd<'_>, max: usize) -> io::Result<Vec<u8>> {
    // SAFETY: fcntl(F_GET_SEALS) takes no pointer argument.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::last_os_error());
    }
    let need = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    if seals & need != need {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "seccomp memfd is not sealed against writes",
        ));
    }
    let file = File::from(fd.try_clone_to_owned()?);
    let len = file.metadata()?.len();
    if len > max as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "seccomp memfd too large",
        ));
    }
    let mut buf = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0)?;
    Ok(buf)
}

/// Convenience for the worker: reads and parses the bundle from `fd`.
pub fn read_bundle(fd: impl AsFd) -> io::Result<FilterBundle> {
    FilterBundle::from_bytes(&read_sealed(fd.as_fd(), MAX_BUNDLE_BYTES)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_roundtrip_and_rejects() {
        let b = FilterBundle {
            listener: vec![1; 16],
            inference: vec![2; 8],
        };
        let bytes = b.to_bytes();
        assert_eq!(FilterBundle::from_bytes(&bytes).unwrap(), b);
        assert!(FilterBundle::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(FilterBundle::from_bytes(&bad).is_err());
        let mut huge = bytes.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(FilterBundle::from_bytes(&huge).is_err());
    }

    #[test]
    fn sealed_memfd_roundtrip() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let fd = sealed_memfd(&data).unwrap();
        assert_eq!(read_sealed(fd.as_fd(), 4096).unwrap(), data);
        assert!(read_sealed(fd.as_fd(), 10).is_err());
        let unsealed = anonymous_file("t").unwrap();
        assert!(read_sealed(unsealed.as_fd(), 4096).is_err());
    }
}
