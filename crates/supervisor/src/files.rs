//! Reading model and input files safely on the supervisor side: regular files only (a FIFO or device named
//! as a model file would hang or feed unbounded data), size-capped, read once into memory so what is checked
//! is exactly what the worker receives (as a sealed memfd).
use crate::error::{Error, Result};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads a regular file of at most `limit` bytes.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO must not block; O_NOCTTY: never acquire a terminal.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(file_err)?;
    read_opened(path, file, limit)
}

/// A model directory whose files are opened with `openat2(RESOLVE_BENEATH)`: a path (or a symlink on it) that
/// leads outside the directory is refused by the kernel, so a hostile model cannot make the supervisor read
/// e.g. `labels.txt -> /etc/passwd` and hand the contents back as class labels.
pub struct ModelDir {
    path: std::path::PathBuf,
    fd: std::os::fd::OwnedFd,
    links_outside: bool,
}

impl ModelDir {
    /// Opens `path`. With `links_outside`, files may resolve anywhere the user can read (explicit opt-in).
    pub fn open(path: &Path, links_outside: bool) -> Result<ModelDir> {
        use rustix::fs::{open, Mode, OFlags};
        let fd = open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::File {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(ModelDir {
            path: path.to_path_buf(),
            fd,
            links_outside,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `rel` names an existing entry (without following it).
    pub fn contains(&self, rel: &Path) -> bool {
        let rel = rel.strip_prefix(&self.path).unwrap_or(rel);
        rustix::fs::statat(&self.fd, rel, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Reads the regular file `rel` (relative to the directory, or a path under it) of at most `limit` bytes.
    pub fn read(&self, rel: &Path, limit: u64) -> Result<Vec<u8>> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let rel = rel.strip_prefix(&self.path).unwrap_or(rel);
        let shown = self.path.join(rel);
        if self.links_outside {
            return read_regular_file(&shown, limit);
        }
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let fd = openat2(&self.fd, rel, flags, Mode::empty(), resolve).map_err(|e| {
            let source = if e == rustix::io::Errno::XDEV {
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "resolves outside the model directory (a symlink or `..`); refused \
                     (allow explicitly with --allow-links-outside-model)",
                )
            } else {
                e.into()
            };
            Error::File {
                path: shown.clone(),
                source,
            }
        })?;
        read_opened(&shown, std::fs::File::from(fd), limit)
    }
}

fn read_opened(path: &Path, file: std::fs::File, limit: u64) -> Result<Vec<u8>> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(file_err)?;
    if !meta.is_file() {
        return Err(file_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (FIFOs, devices and directories are refused)",
        )));
    }
    if meta.len() > limit {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // Guard against a file that grows while we read it.
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(file_err)?;
    if buf.len() as u64 > limit {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifo_without_blocking_and_directories() {
        let dir = std::env::temp_dir().join(format!("cs-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_regular_file(&fifo, 10).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_regular_file(&dir, 10).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn model_dir_refuses_symlinks_leading_outside_but_follows_those_inside() {
        let dir = std::env::temp_dir().join(format!("cs-files-beneath-{}", std::process::id()));
        let outside = std::env::temp_dir().join(format!("cs-files-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&outside, "SECRET").unwrap();
        std::fs::write(dir.join("real.txt"), "ok").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("abs.txt")).unwrap();
        std::os::unix::fs::symlink("../x/../../etc/passwd", dir.join("rel.txt")).unwrap();
        std::os::unix::fs::symlink("real.txt", dir.join("inside.txt")).unwrap();
        let m = ModelDir::open(&dir, false).unwrap();
        assert_eq!(m.read(Path::new("inside.txt"), 10).unwrap(), b"ok");
        for bad in ["abs.txt", "rel.txt", "../../etc/passwd"] {
            let err = m.read(Path::new(bad), 1 << 20).unwrap_err().to_string();
            assert!(err.contains("outside the model directory"), "{bad}: {err}");
            assert!(!err.contains("SECRET") && !err.contains("root:"), "{err}");
        }
        // Explicit opt-in follows them.
        let m = ModelDir::open(&dir, true).unwrap();
        assert_eq!(m.read(Path::new("abs.txt"), 10).unwrap(), b"SECRET");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&outside).unwrap();
    }

    #[test]
    fn enforces_the_cap_and_names_the_file() {
        let p = std::env::temp_dir().join(format!("cs-files-cap-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        let err = read_regular_file(&p, 99).unwrap_err().to_string();
        assert!(
            err.contains("100 bytes is larger than the limit of 99"),
            "{err}"
        );
        assert!(err.contains(p.to_str().unwrap()), "{err}");
        assert_eq!(read_regular_file(&p, 100).unwrap().len(), 100);
        std::fs::remove_file(&p).unwrap();
    }
}
