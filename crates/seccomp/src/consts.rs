//! Symbolic constants that policy files may use instead of raw numbers.
//!
//! Only names listed here are accepted by the policy parser, so a typo in a
//! reviewed data file is an error, never a silently wrong number. Values are the
//! x86_64 Linux ABI values (checked against the `libc` crate by a unit test).

/// `(name, value)` pairs, sorted by name for binary search.
const TABLE: &[(&str, u64)] = &[
    ("AF_INET", 2),
    ("AF_INET6", 10),
    ("AF_NETLINK", 16),
    ("AF_UNIX", 1),
    ("ARCH_GET_FS", 0x1003),
    ("ARCH_GET_GS", 0x1004),
    ("ARCH_SET_FS", 0x1002),
    ("AT_EMPTY_PATH", 0x1000),
    ("AT_SYMLINK_NOFOLLOW", 0x100),
    ("CLONE_CHILD_CLEARTID", 0x0020_0000),
    ("CLONE_CHILD_SETTID", 0x0100_0000),
    ("CLONE_FILES", 0x400),
    ("CLONE_FS", 0x200),
    ("CLONE_IO", 0x8000_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWNET", 0x4000_0000),
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_PARENT", 0x8000),
    ("CLONE_PARENT_SETTID", 0x0010_0000),
    ("CLONE_PIDFD", 0x1000),
    ("CLONE_PTRACE", 0x2000),
    ("CLONE_SETTLS", 0x0008_0000),
    ("CLONE_SIGHAND", 0x800),
    ("CLONE_SYSVSEM", 0x0004_0000),
    ("CLONE_THREAD", 0x0001_0000),
    ("CLONE_UNTRACED", 0x0080_0000),
    ("CLONE_VFORK", 0x4000),
    ("CLONE_VM", 0x100),
    ("FIOCLEX", 0x5451),
    ("FIONBIO", 0x5421),
    ("FIONCLEX", 0x5450),
    ("FIONREAD", 0x541B),
    ("F_ADD_SEALS", 1033),
    ("F_DUPFD_CLOEXEC", 1030),
    ("F_GETFD", 1),
    ("F_GETFL", 3),
    ("F_GET_SEALS", 1034),
    ("F_SETFD", 2),
    ("F_SETFL", 4),
    ("MAP_ANONYMOUS", 0x20),
    ("MAP_FIXED", 0x10),
    ("MAP_PRIVATE", 0x02),
    ("MAP_SHARED", 0x01),
    ("MFD_ALLOW_SEALING", 0x2),
    ("MFD_CLOEXEC", 0x1),
    ("MFD_NOEXEC_SEAL", 0x8),
    ("O_ACCMODE", 0o3),
    ("O_APPEND", 0o2000),
    ("O_CLOEXEC", 0o2_000_000),
    ("O_CREAT", 0o100),
    ("O_DIRECTORY", 0o200_000),
    ("O_EXCL", 0o200),
    ("O_NONBLOCK", 0o4000),
    ("O_PATH", 0o10_000_000),
    ("O_RDONLY", 0),
    ("O_RDWR", 0o2),
    ("O_TMPFILE", 0o20_200_000),
    ("O_TRUNC", 0o1000),
    ("O_WRONLY", 0o1),
    ("PER_LINUX", 0),
    ("PER_QUERY", 0xffff_ffff),
    ("PROT_EXEC", 0x4),
    ("PROT_NONE", 0x0),
    ("PROT_READ", 0x1),
    ("PROT_WRITE", 0x2),
    ("PR_GET_DUMPABLE", 3),
    ("PR_GET_NAME", 16),
    ("PR_GET_NO_NEW_PRIVS", 39),
    ("PR_SET_NAME", 15),
    ("PR_SET_VMA", 0x5356_4d41),
    ("SECCOMP_FILTER_FLAG_TSYNC", 1),
    ("SECCOMP_SET_MODE_FILTER", 1),
    ("SOL_SOCKET", 1),
    ("SO_TYPE", 3),
    ("TCGETS", 0x5401),
    ("TIOCGWINSZ", 0x5413),
    ("__O_TMPFILE", 0o20_000_000),
];

/// Looks up a symbolic constant by its exact name.
pub fn lookup(name: &str) -> Option<u64> {
    TABLE
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| TABLE[i].1)
}

/// Every known constant name (sorted).
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{} !< {}", w[0].0, w[1].0);
        }
    }

    #[test]
    fn values_match_libc() {
        let checks: &[(&str, u64)] = &[
            ("AF_INET", libc::AF_INET as u64),
            ("AF_INET6", libc::AF_INET6 as u64),
            ("AF_NETLINK", libc::AF_NETLINK as u64),
            ("AF_UNIX", libc::AF_UNIX as u64),
            ("AT_EMPTY_PATH", libc::AT_EMPTY_PATH as u64),
            ("AT_SYMLINK_NOFOLLOW", libc::AT_SYMLINK_NOFOLLOW as u64),
            ("CLONE_CHILD_CLEARTID", libc::CLONE_CHILD_CLEARTID as u64),
            ("CLONE_CHILD_SETTID", libc::CLONE_CHILD_SETTID as u64),
            ("CLONE_FILES", libc::CLONE_FILES as u64),
            ("CLONE_FS", libc::CLONE_FS as u64),
            ("CLONE_IO", libc::CLONE_IO as u32 as u64),
            ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
            ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
            ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
            ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
            ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
            ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
            ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
            ("CLONE_PARENT", libc::CLONE_PARENT as u64),
            ("CLONE_PARENT_SETTID", libc::CLONE_PARENT_SETTID as u64),
            ("CLONE_PIDFD", libc::CLONE_PIDFD as u64),
            ("CLONE_PTRACE", libc::CLONE_PTRACE as u64),
            ("CLONE_SETTLS", libc::CLONE_SETTLS as u64),
            ("CLONE_SIGHAND", libc::CLONE_SIGHAND as u64),
            ("CLONE_SYSVSEM", libc::CLONE_SYSVSEM as u64),
            ("CLONE_THREAD", libc::CLONE_THREAD as u64),
            ("CLONE_UNTRACED", libc::CLONE_UNTRACED as u64),
            ("CLONE_VFORK", libc::CLONE_VFORK as u64),
            ("CLONE_VM", libc::CLONE_VM as u64),
            ("FIOCLEX", libc::FIOCLEX),
            ("FIONBIO", libc::FIONBIO),
            ("FIONCLEX", libc::FIONCLEX),
            ("FIONREAD", libc::FIONREAD),
            ("F_ADD_SEALS", libc::F_ADD_SEALS as u64),
            ("F_DUPFD_CLOEXEC", libc::F_DUPFD_CLOEXEC as u64),
            ("F_GETFD", libc::F_GETFD as u64),
            ("F_GETFL", libc::F_GETFL as u64),
            ("F_GET_SEALS", libc::F_GET_SEALS as u64),
            ("F_SETFD", libc::F_SETFD as u64),
            ("F_SETFL", libc::F_SETFL as u64),
            ("MAP_ANONYMOUS", libc::MAP_ANONYMOUS as u64),
            ("MAP_FIXED", libc::MAP_FIXED as u64),
            ("MAP_PRIVATE", libc::MAP_PRIVATE as u64),
            ("MAP_SHARED", libc::MAP_SHARED as u64),
            ("MFD_ALLOW_SEALING", libc::MFD_ALLOW_SEALING as u64),
            ("MFD_CLOEXEC", libc::MFD_CLOEXEC as u64),
            ("MFD_NOEXEC_SEAL", libc::MFD_NOEXEC_SEAL as u64),
            ("O_ACCMODE", libc::O_ACCMODE as u64),
            ("O_APPEND", libc::O_APPEND as u64),
            ("O_CLOEXEC", libc::O_CLOEXEC as u64),
            ("O_CREAT", libc::O_CREAT as u64),
            ("O_DIRECTORY", libc::O_DIRECTORY as u64),
            ("O_EXCL", libc::O_EXCL as u64),
            ("O_NONBLOCK", libc::O_NONBLOCK as u64),
            ("O_PATH", libc::O_PATH as u64),
            ("O_RDONLY", libc::O_RDONLY as u64),
            ("O_RDWR", libc::O_RDWR as u64),
            ("O_TMPFILE", libc::O_TMPFILE as u64),
            ("O_TRUNC", libc::O_TRUNC as u64),
            ("O_WRONLY", libc::O_WRONLY as u64),
            ("PROT_EXEC", libc::PROT_EXEC as u64),
            ("PROT_NONE", libc::PROT_NONE as u64),
            ("PROT_READ", libc::PROT_READ as u64),
            ("PROT_WRITE", libc::PROT_WRITE as u64),
            ("PR_GET_DUMPABLE", libc::PR_GET_DUMPABLE as u64),
            ("PR_GET_NAME", libc::PR_GET_NAME as u64),
            ("PR_GET_NO_NEW_PRIVS", libc::PR_GET_NO_NEW_PRIVS as u64),
            ("PR_SET_NAME", libc::PR_SET_NAME as u64),
            ("PR_SET_VMA", libc::PR_SET_VMA as u64),
            ("SECCOMP_FILTER_FLAG_TSYNC", libc::SECCOMP_FILTER_FLAG_TSYNC),
            (
                "SECCOMP_SET_MODE_FILTER",
                libc::SECCOMP_SET_MODE_FILTER as u64,
            ),
            ("SOL_SOCKET", libc::SOL_SOCKET as u64),
            ("SO_TYPE", libc::SO_TYPE as u64),
            ("TCGETS", libc::TCGETS),
            ("TIOCGWINSZ", libc::TIOCGWINSZ),
            ("__O_TMPFILE", (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64),
        ];
        for (name, want) in checks {
            assert_eq!(lookup(name), Some(*want), "{name}");
        }
    }
}
