//! Read-only mappings of what the supervisor hands over: the model weights (tens of MB, a sealed memfd) are
//! handed to Caffe's parser, and each request's inputs (ranges of the input arena) to the decoder, straight
//! from the mapping instead of being copied out first.
//!
//! Safe against the classic shared-memory attacks because `caffe_sandbox_protocol::sealed_size` has verified
//! F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL before mapping: nobody can truncate the file under the
//! mapping (no SIGBUS) or change its bytes while Caffe parses them.
use caffe_sandbox_protocol::{sealed_size, ProtocolError};
use std::os::fd::AsFd;

/// A private read-only mapping of a sealed memfd.
pub struct SealedMap {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl SealedMap {
    /// Verifies the seals and the size cap, then maps the whole file read-only.
    pub fn new(fd: impl AsFd, what: &str, max_len: usize) -> Result<SealedMap, ProtocolError> {
        let fd = fd.as_fd();
        let size = sealed_size(fd, what)?;
        if size > max_len as u64 {
            return Err(ProtocolError::TooLong {
                field: what.to_owned(),
                len: size,
                max: max_len,
            });
        }
        Self::map(fd, size as usize, rustix::mm::MapFlags::PRIVATE, what)
    }

    fn map(
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
        flags: rustix::mm::MapFlags,
        what: &str,
    ) -> Result<SealedMap, ProtocolError> {
        if len == 0 {
            return Ok(SealedMap {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh read-only mapping of a regular file whose size is sealed at exactly `len` bytes; the
        // kernel picks the address; the mapping is owned by the returned value and unmapped exactly once in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                flags,
                fd,
                0,
            )
        }
        .map_err(|e| ProtocolError::NotMemfd {
            what: what.to_owned(),
            reason: format!("mmap failed: {e}"),
        })?;
        Ok(SealedMap { ptr, len })
    }

    /// Maps the input arena `fd` (see `caffe_sandbox_protocol::InputArena`) read-only, after
    /// `caffe_sandbox_protocol::arena_size` has verified that its size is sealed (no SIGBUS).
    pub fn arena(fd: impl AsFd) -> Result<SealedMap, ProtocolError> {
        let fd = fd.as_fd();
        let size = caffe_sandbox_protocol::arena_size(fd)?;
        if size > caffe_sandbox_protocol::MAX_INPUT_ARENA {
            return Err(ProtocolError::TooLong {
                field: "input arena".into(),
                len: size,
                max: caffe_sandbox_protocol::MAX_INPUT_ARENA as usize,
            });
        }
        Self::map(
            fd,
            size as usize,
            rustix::mm::MapFlags::SHARED,
            "input arena",
        )
    }

    /// The bytes of `at`, or an error when the range does not lie within the mapping.
    pub fn range(&self, at: caffe_sandbox_protocol::ArenaRange) -> Result<&[u8], ProtocolError> {
        let end = at
            .offset
            .checked_add(at.len)
            .filter(|&e| e <= self.len as u64);
        match end {
            Some(end) => Ok(&self[at.offset as usize..end as usize]),
            None => Err(ProtocolError::TooLong {
                field: format!("arena range {}+{}", at.offset, at.len),
                len: at.offset.saturating_add(at.len),
                max: self.len,
            }),
        }
    }
}

impl std::ops::Deref for SealedMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of `self`; the seals guarantee the bytes can
        // neither change nor disappear while mapped.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for SealedMap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the region mapped in `new`, once.
            let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
        }
    }
}
