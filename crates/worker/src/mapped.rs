//! Read-only mappings of sealed memfds: the model weights (tens of MB) are handed to Caffe's parser, and each
//! request's encoded images to the decoder, straight from the supervisor's memfd instead of being copied out
//! of it first.
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
        let len = size as usize;
        if len == 0 {
            return Ok(SealedMap {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh private read-only mapping of a sealed regular file of exactly `len` bytes; the kernel
        // picks the address; the mapping is owned by the returned value and unmapped exactly once in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE,
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
