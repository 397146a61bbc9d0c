//! The minimal root: private propagation, tmpfs root, read-only binds, private /dev, optional private /proc,
//! scratch tmpfs, pivot_root, old root detached. Runs in stage 2 (namespace root of its own user namespace).

use std::fs;
use std::io;
use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sys::{
    self, ctx, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use crate::{ProcMode, ScratchSpec};

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

/// One read-only bind.
#[derive(Debug, Clone)]
pub(crate) struct RoBind {
    /// `O_PATH` fd of the host file or directory, opened by the clone child with the caller's credentials.
    pub src_fd: RawFd,
    pub is_dir: bool,
    /// Path inside the sandbox (the host path as given).
    pub dst: PathBuf,
    pub exec: bool,
}

/// What [`build`] produced, for the report and for Landlock.
pub(crate) struct RootView {
    pub binds: Vec<RoBind>,
    pub dev_nodes: Vec<PathBuf>,
    pub proc_mounted: bool,
    pub scratch: Option<PathBuf>,
}

/// Errors carry whether they are a configuration problem (missing path) or a kernel refusal.
pub(crate) enum MountError {
    Config(String),
    Kernel(String),
    Scratch(String),
}

fn under(root: &str, p: &Path) -> PathBuf {
    Path::new(root).join(p.strip_prefix("/").unwrap_or(p))
}

/// Collect the fds the clone child opened for the binds (one i32 per bind on `pipe_fd`).
pub(crate) fn resolve_binds(
    binds: &[(PathBuf, bool)],
    pipe_fd: RawFd,
) -> Result<Vec<RoBind>, MountError> {
    // SAFETY: the pipe read end was handed to us by the supervisor and is owned by this process.
    let mut pipe = unsafe { fs::File::from_raw_fd(pipe_fd) };
    let mut out = Vec::new();
    for (dst, exec) in binds {
        let mut b = [0u8; 4];
        pipe.read_exact(&mut b)
            .map_err(|e| MountError::Kernel(format!("read bind fds: {e}")))?;
        let v = i32::from_ne_bytes(b);
        if v < 0 {
            return Err(MountError::Config(format!(
                "read-only path {}: {}",
                dst.display(),
                io::Error::from_raw_os_error(-v)
            )));
        }
        // SAFETY: fstat on the O_PATH fd into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and output pointer.
        sys::check(unsafe { libc::fstat(v, &mut st) })
            .map_err(|e| MountError::Kernel(format!("fstat {}: {e}", dst.display())))?;
        out.push(RoBind {
            src_fd: v,
            is_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
            dst: dst.clone(),
            exec: *exec,
        });
    }
    // Parents before children so nested binds land on top of their parent's bind.
    out.sort_by_key(|b| b.dst.components().count());
    Ok(out)
}

fn create_mountpoint(dst: &Path, is_dir: bool) -> io::Result<()> {
    if dst.symlink_metadata().is_ok() {
        return Ok(());
    }
    if is_dir {
        fs::create_dir_all(dst)
    } else {
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(dst)
            .map(drop)
    }
}

fn base_mountpoint() -> Result<&'static Path, MountError> {
    ["/tmp", "/mnt", "/var/tmp", "/run"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .ok_or_else(|| MountError::Kernel("no directory to mount the staging tmpfs on".into()))
}

/// Build the new root and pivot into it.
pub(crate) fn build(
    binds: Vec<RoBind>,
    dev_nodes: &[PathBuf],
    proc_mode: ProcMode,
    scratch: Option<&ScratchSpec>,
) -> Result<RootView, MountError> {
    let k = MountError::Kernel;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(ctx("make / rprivate"))
    .map_err(k)?;
    // Staging tmpfs: becomes / for a moment, holding the old root at /oldroot and the new root at /newroot.
    let base = base_mountpoint()?;
    sys::mount(
        Some(Path::new("tmpfs")),
        base,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=0755,size=65536,nr_inodes=64"),
    )
    .map_err(ctx("mount staging tmpfs"))
    .map_err(k)?;
    for d in ["oldroot", "newroot"] {
        fs::create_dir(base.join(d))
            .map_err(ctx(format!("mkdir staging {d}")))
            .map_err(k)?;
    }
    sys::pivot_root(base, &base.join("oldroot"))
        .map_err(ctx("pivot_root into staging"))
        .map_err(k)?;
    std::env::set_current_dir("/")
        .map_err(ctx("chdir /"))
        .map_err(k)?;

    let new = Path::new(NEW);
    sys::mount(
        Some(Path::new("tmpfs")),
        new,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755,size=1048576,nr_inodes=4096"),
    )
    .map_err(ctx("mount root tmpfs"))
    .map_err(k)?;

    // Mount points of the writable / special mounts, created while the root tmpfs is still writable.
    let mut special = vec![new.join("dev")];
    if proc_mode == ProcMode::PrivatePidNs {
        special.push(new.join("proc"));
    }
    if let Some(sc) = scratch {
        special.push(under(NEW, &sc.path));
    }
    for d in &special {
        fs::create_dir_all(d)
            .map_err(ctx(format!("mkdir {}", d.display())))
            .map_err(k)?;
    }
    for b in &binds {
        // The host procfs (under the old root) resolves the clone child's fd to the exact file it opened.
        let src = PathBuf::from(format!("{OLD}/proc/self/fd/{}", b.src_fd));
        let dst = under(NEW, &b.dst);
        let is_dir = b.is_dir;
        create_mountpoint(&dst, is_dir)
            .map_err(ctx(format!("create mount point {}", b.dst.display())))
            .map_err(k)?;
        sys::mount(Some(&src), &dst, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(ctx(format!("bind {}", b.dst.display())))
            .map_err(k)?;
        if !b.exec {
            sys::mount_setattr_add(&dst, MOUNT_ATTR_NOEXEC, true)
                .map_err(ctx(format!("make {} noexec", b.dst.display())))
                .map_err(k)?;
        }
    }
    // One recursive call makes the root tmpfs and every bind (with its submounts) read-only, nosuid, nodev.
    sys::mount_setattr_add(
        new,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        true,
    )
    .map_err(ctx("make the read-only binds read-only"))
    .map_err(k)?;

    // /dev: read-only tmpfs with bound device nodes (rw, nosuid, noexec).
    let dev = new.join("dev");
    fs::create_dir_all(&dev)
        .map_err(ctx("mkdir /dev"))
        .map_err(k)?;
    sys::mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
        Some("mode=0755,size=65536,nr_inodes=64"),
    )
    .map_err(ctx("mount /dev tmpfs"))
    .map_err(k)?;
    for node in dev_nodes {
        if !node.starts_with("/dev") {
            return Err(MountError::Config(format!(
                "device node {} is not under /dev",
                node.display()
            )));
        }
        let src = under(OLD, node);
        if src.symlink_metadata().is_err() {
            return Err(MountError::Config(format!(
                "device node {} does not exist on the host",
                node.display()
            )));
        }
        let dst = under(NEW, node);
        create_mountpoint(&dst, false)
            .map_err(ctx(format!("create {}", node.display())))
            .map_err(k)?;
        sys::mount(Some(&src), &dst, None, libc::MS_BIND, None)
            .map_err(ctx(format!("bind {}", node.display())))
            .map_err(k)?;
        sys::mount_setattr_add(&dst, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false)
            .map_err(ctx(format!("restrict {}", node.display())))
            .map_err(k)?;
    }
    sys::mount_setattr_add(
        &dev,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        false,
    )
    .map_err(ctx("make /dev read-only"))
    .map_err(k)?;

    let proc_mounted = match proc_mode {
        ProcMode::None => false,
        ProcMode::PrivatePidNs => {
            let p = new.join("proc");
            fs::create_dir_all(&p)
                .map_err(ctx("mkdir /proc"))
                .map_err(k)?;
            sys::mount(
                Some(Path::new("proc")),
                &p,
                Some("proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
                Some("subset=pid,hidepid=invisible"),
            )
            .map_err(ctx("mount private /proc (subset=pid)"))
            .map_err(k)?;
            true
        }
    };

    let scratch_path = match scratch {
        None => None,
        Some(s) => {
            let p = under(NEW, &s.path);
            fs::create_dir_all(&p)
                .map_err(ctx("mkdir scratch"))
                .map_err(MountError::Scratch)?;
            let inodes = (s.size_bytes / 16384).clamp(256, 1 << 20);
            sys::mount(
                Some(Path::new("tmpfs")),
                &p,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(&format!(
                    "size={},nr_inodes={inodes},mode=0700",
                    s.size_bytes
                )),
            )
            .map_err(ctx("mount scratch tmpfs"))
            .map_err(MountError::Scratch)?;
            Some(s.path.clone())
        }
    };

    sys::mount_setattr_add(
        new,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        false,
    )
    .map_err(ctx("make root read-only"))
    .map_err(k)?;

    // Final pivot: the staging tmpfs and the whole host tree under it are detached.
    std::env::set_current_dir(new)
        .map_err(ctx("chdir newroot"))
        .map_err(k)?;
    sys::pivot_root(Path::new("."), Path::new("."))
        .map_err(ctx("pivot_root into new root"))
        .map_err(k)?;
    sys::umount_detach(Path::new("."))
        .map_err(ctx("detach old root"))
        .map_err(k)?;
    std::env::set_current_dir("/")
        .map_err(ctx("chdir /"))
        .map_err(k)?;
    Ok(RootView {
        binds,
        dev_nodes: dev_nodes.to_vec(),
        proc_mounted,
        scratch: scratch_path,
    })
}

/// statvfs of a path.
pub(crate) fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
    let c = sys::cstr(p.as_os_str())?;
    // SAFETY: statvfs is plain data; the call writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and output pointer.
    sys::check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// Read back what the kernel says about the new root.
pub(crate) fn verify(
    view: &RootView,
    scratch: Option<&ScratchSpec>,
) -> Result<(String, Option<String>), String> {
    let root = statvfs(Path::new("/")).map_err(ctx("statvfs /"))?;
    if root.f_flag & libc::ST_RDONLY == 0 {
        return Err("new root is writable".into());
    }
    for host_only in ["/oldroot", "/newroot"] {
        if Path::new(host_only).symlink_metadata().is_ok() {
            return Err(format!("{host_only} still visible"));
        }
    }
    let root_detail = format!(
        "pivot_root into read-only tmpfs; {} read-only binds; /dev: {}; /proc: {}",
        view.binds.len(),
        view.dev_nodes
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        if view.proc_mounted {
            "private pid ns, subset=pid"
        } else {
            "none"
        }
    );
    let scratch_detail = match (scratch, &view.scratch) {
        (Some(s), Some(p)) => {
            let st = statvfs(p).map_err(ctx("statvfs scratch"))?;
            let want = libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC;
            if st.f_flag & want != want || st.f_flag & libc::ST_RDONLY != 0 {
                return Err(format!(
                    "scratch mount flags {:#x} lack nosuid/nodev/noexec or are read-only",
                    st.f_flag
                ));
            }
            let size = st.f_blocks * st.f_frsize;
            if size > s.size_bytes + 4096 {
                return Err(format!(
                    "scratch size {size} exceeds the requested {}",
                    s.size_bytes
                ));
            }
            Some(format!(
                "{} tmpfs, {size} bytes, nosuid,nodev,noexec",
                p.display()
            ))
        }
        _ => None,
    };
    Ok((root_detail, scratch_detail))
}
