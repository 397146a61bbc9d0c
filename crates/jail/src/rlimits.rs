//! setrlimit for the target (soft = hard), read back.

use crate::Limits;

fn set(res: libc::__rlimit_resource_t, name: &str, v: u64) -> Result<String, String> {
    let lim = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(res, &lim) } != 0 {
        return Err(format!(
            "setrlimit({name}, {v}): {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut got = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid output struct.
    if unsafe { libc::getrlimit(res, &mut got) } != 0 || got.rlim_cur != v || got.rlim_max != v {
        return Err(format!(
            "{name} reads back as {}/{}, wanted {v}",
            got.rlim_cur, got.rlim_max
        ));
    }
    Ok(format!("{name}={v}"))
}

/// Apply the limits (RLIMIT_CORE always 0).
pub(crate) fn apply(l: &Limits) -> Result<String, String> {
    let mut done = vec![set(libc::RLIMIT_CORE, "core", 0)?];
    let table: [(libc::__rlimit_resource_t, &str, Option<u64>); 6] = [
        (libc::RLIMIT_AS, "as", l.address_space),
        (libc::RLIMIT_DATA, "data", l.data),
        (libc::RLIMIT_CPU, "cpu", l.cpu_seconds),
        (libc::RLIMIT_FSIZE, "fsize", l.file_size),
        (libc::RLIMIT_NOFILE, "nofile", l.nofile),
        (libc::RLIMIT_NPROC, "nproc", l.nproc),
    ];
    for (res, name, v) in table {
        if let Some(v) = v {
            done.push(set(res, name, v)?);
        }
    }
    Ok(done.join(" "))
}
