//! Test-only probe run inside exported OCI bundles (crates/policy/tests/oci_runtime.rs): performs one action
//! named on the command line and prints what happened. A seccomp kill ends it with SIGSYS before it prints.
use std::io::Write;

fn main() {
    let action = std::env::args().nth(1).unwrap_or_default();
    let result: std::io::Result<String> = match action.as_str() {
        "ok" => Ok("ok".into()),
        // SAFETY: plain socket(2) call with constant arguments.
        "socket-inet" => match unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) } {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok("socket created".into()),
        },
        // SAFETY: as above.
        "socket-unix" => match unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) } {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok("socket created".into()),
        },
        "write-scratch" => std::fs::write("/scratch/x", b"x").map(|_| "wrote /scratch/x".into()),
        "write-root" => std::fs::write("/x", b"x").map(|_| "wrote /x".into()),
        "read-etc" => {
            std::fs::read_to_string("/etc/hostname").map(|s| format!("read {} bytes", s.len()))
        }
        "dev-zero" => {
            std::fs::read("/dev/zero").map(|v| format!("read {} bytes from /dev/zero", v.len()))
        }
        "ptrace" => {
            // SAFETY: PTRACE_TRACEME takes no pointers.
            match unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok("ptrace allowed".into()),
            }
        }
        other => Err(std::io::Error::other(format!("unknown action {other:?}"))),
    };
    let mut out = std::io::stdout();
    match result {
        Ok(s) => {
            let _ = writeln!(out, "OK {s}");
        }
        Err(e) => {
            let _ = writeln!(out, "ERR {} {e}", e.raw_os_error().unwrap_or(0));
        }
    }
}
