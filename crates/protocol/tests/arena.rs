//! The input arena's promises, checked on the real kernel: the worker's fd reads what the supervisor wrote (and
//! what it writes later: one file, rewritten in place), and can neither write, resize, reseal nor map it
//! writable and shared; a reader refuses an arena whose size is not sealed, and ranges outside it.

use caffe_sandbox_protocol::{
    arena_size, read_arena_range, ArenaRange, InputArena, ProtocolError, ARENA_SEALS,
};
use rustix::fs::{fcntl_add_seals, fcntl_get_seals, ftruncate, SealFlags};
use rustix::io::Errno;

#[test]
fn the_worker_reads_every_write_through_its_read_only_fd() {
    let arena = InputArena::new(1 << 20).unwrap();
    assert_eq!(arena.capacity(), 1 << 20);
    assert_eq!(arena_size(arena.reader()).unwrap(), 1 << 20);
    assert!(fcntl_get_seals(arena.reader())
        .unwrap()
        .contains(ARENA_SEALS));
    arena.write_at(0, b"first request").unwrap();
    let at = ArenaRange { offset: 0, len: 13 };
    assert_eq!(
        read_arena_range(arena.reader(), at).unwrap(),
        b"first request"
    );
    arena.write_at(0, b"second").unwrap();
    assert_eq!(
        read_arena_range(arena.reader(), ArenaRange { offset: 0, len: 6 }).unwrap(),
        b"second"
    );
    // Writes outside the capacity are refused on the supervisor's side too.
    assert!(arena.write_at((1 << 20) - 2, b"abc").is_err());
    assert!(arena.write_at(u64::MAX, b"a").is_err());
}

#[test]
fn the_worker_cannot_write_resize_reseal_or_map_it_writable() {
    let arena = InputArena::new(1 << 20).unwrap();
    arena.write_at(0, b"supervisor's bytes").unwrap();
    let fd = arena.reader();
    assert_eq!(rustix::io::pwrite(fd, b"worker", 0), Err(Errno::BADF));
    assert!(ftruncate(fd, 0).is_err());
    assert!(ftruncate(fd, 2 << 20).is_err());
    assert_eq!(fcntl_add_seals(fd, SealFlags::WRITE), Err(Errno::PERM));
    assert_eq!(
        rustix::fs::fallocate(
            fd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            0,
            4096
        ),
        Err(Errno::BADF)
    );
    // SAFETY: asks for a new mapping (address chosen by the kernel) that is expected to be refused; if it were
    // granted, it is unmapped right away.
    let shared = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            4096,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
    };
    if let Ok(p) = shared {
        // SAFETY: unmapping the mapping just made.
        let _ = unsafe { rustix::mm::munmap(p, 4096) };
        panic!("the read-only arena fd could be mapped writable and shared");
    }
    assert_eq!(shared.unwrap_err(), Errno::ACCESS);
    assert_eq!(
        read_arena_range(fd, ArenaRange { offset: 0, len: 18 }).unwrap(),
        b"supervisor's bytes"
    );
}

#[test]
fn readers_refuse_unsealed_files_and_ranges_outside_the_arena() {
    let unsealed = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&unsealed, 4096).unwrap();
    assert!(matches!(
        arena_size(std::os::fd::AsFd::as_fd(&unsealed)),
        Err(ProtocolError::MissingSeals { .. })
    ));
    let arena = InputArena::new(1 << 20).unwrap();
    for (offset, len) in [(1 << 20, 1), ((1 << 20) - 1, 2), (u64::MAX, 2)] {
        assert!(
            matches!(
                read_arena_range(arena.reader(), ArenaRange { offset, len }),
                Err(ProtocolError::TooLong { .. })
            ),
            "{offset}+{len}"
        );
    }
    assert!(InputArena::new(caffe_sandbox_protocol::MAX_INPUT_ARENA + 1).is_err());
}

/// Bytes of memory the file behind `fd` holds (st_blocks is in 512-byte units).
fn allocated(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_blocks as u64 * 512
}

#[test]
fn pages_above_the_kept_part_go_back_to_the_kernel_and_read_as_zeros() {
    const MIB: u64 = 1 << 20;
    let arena = InputArena::new(16 * MIB).unwrap();
    let big = vec![0xA5u8; 8 * MIB as usize];
    arena.write_at(0, &big).unwrap();
    assert!(allocated(arena.reader()) >= 8 * MIB);
    arena.release_above(MIB).unwrap();
    assert!(
        allocated(arena.reader()) <= MIB,
        "{} bytes still allocated",
        allocated(arena.reader())
    );
    assert_eq!(
        arena_size(arena.reader()).unwrap(),
        16 * MIB,
        "the size stays"
    );
    let kept = read_arena_range(
        arena.reader(),
        ArenaRange {
            offset: 0,
            len: MIB,
        },
    )
    .unwrap();
    assert!(
        kept.iter().all(|&b| b == 0xA5),
        "the kept part keeps its bytes"
    );
    let above = ArenaRange {
        offset: MIB,
        len: MIB,
    };
    assert!(read_arena_range(arena.reader(), above)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    // Written again, the released part holds the new bytes.
    arena.write_at(MIB, &big[..MIB as usize]).unwrap();
    assert!(read_arena_range(arena.reader(), above)
        .unwrap()
        .iter()
        .all(|&b| b == 0xA5));
    arena.release_above(16 * MIB).unwrap(); // nothing above the end: nothing to do
}
