//! Capabilities: lock securebits, drop every set including bounding and ambient, read back.

use ::caps::{CapSet, CapsHashSet};

use crate::sys;

const SECBIT_NOROOT: u64 = 1 << 0;
const SECBIT_NOROOT_LOCKED: u64 = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: u64 = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: u64 = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: u64 = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: u64 = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: u64 = 1 << 7;

/// Lock securebits so that exec of anything as (namespace) root never regains capabilities.
pub(crate) fn lock_securebits() -> Result<(), String> {
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    sys::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong)
        .map(drop)
        .map_err(|e| format!("PR_SET_SECUREBITS: {e}"))
}

/// Drop everything. The bounding set is cleared with a raw loop up to 63 so that capabilities newer than
/// the `caps` crate's table are dropped too.
pub(crate) fn drop_all() -> Result<String, String> {
    let known = drop_bounding()?;
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        ::caps::clear(None, set).map_err(|e| format!("clear {set:?}: {e}"))?;
    }
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let left: CapsHashSet =
            ::caps::read(None, set).map_err(|e| format!("read {set:?}: {e}"))?;
        if !left.is_empty() {
            return Err(format!("{set:?} still holds {left:?}"));
        }
    }
    // Kernel capabilities beyond the crate's table: check the bounding set raw.
    for cap in 0..known {
        if sys::prctl(libc::PR_CAPBSET_READ, cap).unwrap_or(1) != 0 {
            return Err(format!("bounding set still holds capability {cap}"));
        }
    }
    Ok(format!(
        "all sets empty (bounding set of {known} caps cleared); securebits locked"
    ))
}

/// Clear the bounding set (needs CAP_SETPCAP unless already empty). Returns the number of capabilities the
/// kernel knows.
pub(crate) fn drop_bounding() -> Result<u64, String> {
    let mut known = 0;
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_READ, cap) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(format!("PR_CAPBSET_READ({cap}): {e}")),
            Ok(0) => {}
            Ok(_) => {
                sys::prctl(libc::PR_CAPBSET_DROP, cap)
                    .map_err(|e| format!("PR_CAPBSET_DROP({cap}): {e}"))?;
            }
        }
        known = cap + 1;
    }
    Ok(known)
}
