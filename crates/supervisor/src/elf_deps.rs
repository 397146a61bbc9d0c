//! The shared libraries a program loads, resolved in-process the way glibc's dynamic loader does, for the
//! subset of ELF features Debian's binaries use: `DT_NEEDED` by name, `DT_RPATH` / `DT_RUNPATH` with absolute
//! directories or `$ORIGIN`, `LD_LIBRARY_PATH`, `/etc/ld.so.cache`. Anything else (`$LIB`, hwcaps subdirectories, a
//! name only the loader's built-in default path would find, …) is [`Unsupported`] and the caller asks the
//! loader itself (`ld.so --list`). `tests/elf_deps.rs` pins the result against `ld.so --list` on real
//! binaries.
//!
//! Why: every `caffe-sandbox run` and every worker spawn needs the list (it decides what is bound read-only
//! into the sandbox); running the loader costs a fork + exec (~1 ms), reading a few ELF headers costs
//! microseconds.
//!
//! The files are only read (through `object`'s `ReadCache`: bounded reads, no mmap, no code executed), and
//! the answer only widens what the sandbox may *read*: a wrong answer makes the program fail to start
//! inside the sandbox, it cannot weaken a layer.

use object::elf::{self, FileHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::ReadCache;
use object::Endianness;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Outside the supported subset: the caller falls back to the loader's `--list`.
#[derive(Debug)]
pub struct Unsupported(pub String);

/// What one ELF object says about loading.
#[derive(Debug, Default)]
struct ElfDeps {
    interpreter: Option<String>,
    needed: Vec<String>,
    soname: Option<String>,
    rpath: Vec<String>,
    runpath: Option<Vec<String>>,
}

enum ReadError {
    /// Not an x86-64 ELF object (the loader skips such files while searching).
    Incompatible,
    Unsupported(String),
}

/// `origin`: what `$ORIGIN` stands for in this object's search paths (glibc: the directory of the path the
/// library was found at, symlinks not resolved; for the program, its real location).
fn read_elf(path: &Path, origin: &Path) -> Result<ElfDeps, ReadError> {
    let unsupported = |what: &str| ReadError::Unsupported(format!("{}: {what}", path.display()));
    let file = File::open(path).map_err(|e| unsupported(&e.to_string()))?;
    let cache = ReadCache::new(file);
    let data = &cache;
    let header = FileHeader64::<Endianness>::parse(data).map_err(|_| ReadError::Incompatible)?;
    let endian = header.endian().map_err(|_| ReadError::Incompatible)?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(ReadError::Incompatible);
    }
    let mut deps = ElfDeps::default();
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| unsupported(&e.to_string()))?;
    let mut has_dynamic_segment = false;
    for ph in segments {
        has_dynamic_segment |= ph.p_type(endian) == elf::PT_DYNAMIC;
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| unsupported(&e.to_string()))?
        {
            deps.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| unsupported(&e.to_string()))?;
    let Some((dynamic, strtab)) = sections
        .dynamic(endian, data)
        .map_err(|e| unsupported(&e.to_string()))?
    else {
        if has_dynamic_segment {
            return Err(unsupported("dynamic segment without section headers"));
        }
        return Ok(deps); // statically linked
    };
    let strings = sections
        .strings(endian, data, strtab)
        .map_err(|e| unsupported(&e.to_string()))?;
    let string = |d: &elf::Dyn64<Endianness>| -> Result<String, ReadError> {
        let off = u32::try_from(d.d_val(endian)).map_err(|_| unsupported("string offset"))?;
        let s = strings.get(off).map_err(|_| unsupported("string table"))?;
        String::from_utf8(s.to_vec()).map_err(|_| unsupported("non-UTF-8 name"))
    };
    let origin = origin.to_string_lossy();
    let dirs = |s: String| {
        s.split(':')
            .map(|d| d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
            .collect::<Vec<_>>()
    };
    for d in dynamic {
        let tag = d.d_tag(endian);
        if tag == elf::DT_NULL {
            break;
        } else if tag == elf::DT_NEEDED {
            deps.needed.push(string(d)?);
        } else if tag == elf::DT_SONAME {
            deps.soname = Some(string(d)?);
        } else if tag == elf::DT_RPATH {
            deps.rpath.extend(dirs(string(d)?));
        } else if tag == elf::DT_RUNPATH {
            deps.runpath
                .get_or_insert_with(Vec::new)
                .extend(dirs(string(d)?));
        }
    }
    // glibc: "If both RPATH and RUNPATH are given, the latter takes precedence."
    if deps.runpath.is_some() {
        deps.rpath.clear();
    }
    for dir in deps.rpath.iter().chain(deps.runpath.iter().flatten()) {
        if !dir.starts_with('/') || dir.contains('$') {
            return Err(unsupported(&format!("search path entry {dir:?}")));
        }
    }
    Ok(deps)
}

/// `/etc/ld.so.cache` (format `glibc-ld.so.cache1.1`), looked up in place: one program needs a handful of
/// names, and indexing all ~600 entries first costs more than scanning them per name.
#[derive(Debug)]
struct LdCache {
    bytes: Vec<u8>,
    nlibs: usize,
}

/// What the cache says about one name.
#[derive(Debug, Default, PartialEq)]
struct CacheHit {
    /// x86-64 libc6 entries, in cache order.
    paths: Vec<PathBuf>,
    /// A glibc-hwcaps variant exists, whose choice depends on the CPU: not modelled.
    hwcaps: bool,
}

const CACHE_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const CACHE_HEADER: usize = 48;
const CACHE_ENTRY: usize = 24;
const FLAG_ELF_LIBC6: u32 = 0x0003;
const FLAG_X8664_LIB64: u32 = 0x0300;

impl LdCache {
    fn parse(bytes: Vec<u8>) -> Option<LdCache> {
        if !bytes.starts_with(CACHE_MAGIC) {
            return None;
        }
        let nlibs = u32::from_le_bytes(bytes.get(20..24)?.try_into().ok()?) as usize;
        if bytes.len() < CACHE_HEADER + nlibs.checked_mul(CACHE_ENTRY)? {
            return None;
        }
        Some(LdCache { bytes, nlibs })
    }

    fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.bytes[o..o + 4].try_into().expect("4 bytes"))
    }

    /// The NUL-terminated string at `o` (`None` when out of bounds or unterminated).
    fn c_str(&self, o: u32) -> Option<&[u8]> {
        let rest = self.bytes.get(o as usize..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    }

    fn lookup(&self, name: &str) -> CacheHit {
        let mut hit = CacheHit::default();
        for i in 0..self.nlibs {
            let at = CACHE_HEADER + i * CACHE_ENTRY;
            let flags = self.u32_at(at);
            if flags & 0xff != FLAG_ELF_LIBC6 || flags & 0xff00 != FLAG_X8664_LIB64 {
                continue;
            }
            if self.c_str(self.u32_at(at + 4)) != Some(name.as_bytes()) {
                continue;
            }
            let hwcap =
                u64::from_le_bytes(self.bytes[at + 16..at + 24].try_into().expect("8 bytes"));
            if hwcap != 0 {
                hit.hwcaps = true;
            } else if let Some(v) = self.c_str(self.u32_at(at + 8)) {
                hit.paths
                    .push(PathBuf::from(std::ffi::OsStr::from_bytes(v)));
            }
        }
        hit
    }
}

fn ld_cache() -> Result<&'static LdCache, Unsupported> {
    static CACHE: OnceLock<Option<LdCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            std::fs::read("/etc/ld.so.cache")
                .ok()
                .and_then(LdCache::parse)
        })
        .as_ref()
        .ok_or_else(|| Unsupported("/etc/ld.so.cache missing or in an unknown format".into()))
}

/// Subdirectories glibc 2.36 probes below every `LD_LIBRARY_PATH` entry before the entry itself.
const HWCAP_SUBDIRS: &[&str] = &["glibc-hwcaps", "tls", "haswell", "avx512_1", "x86_64"];

/// Everything `program` loads, interpreter first, in the loader's breadth-first order, given the
/// `LD_LIBRARY_PATH` it will run with. A statically linked program gives an empty list.
pub fn resolve(program: &Path, ld_library_path: &[PathBuf]) -> Result<Vec<PathBuf>, Unsupported> {
    for dir in ld_library_path {
        if let Some(sub) = HWCAP_SUBDIRS.iter().find(|s| dir.join(s).exists()) {
            return Err(Unsupported(format!("{}/{sub} exists", dir.display())));
        }
    }
    let real = program
        .canonicalize()
        .map_err(|e| Unsupported(format!("{}: {e}", program.display())))?;
    let exe = match read_elf(program, real.parent().unwrap_or(Path::new("/"))) {
        Ok(d) => d,
        Err(ReadError::Incompatible) => {
            return Err(Unsupported(format!(
                "{}: not an x86-64 ELF file",
                program.display()
            )))
        }
        Err(ReadError::Unsupported(s)) => return Err(Unsupported(s)),
    };
    let Some(interp) = exe.interpreter.clone() else {
        if exe.needed.is_empty() {
            return Ok(Vec::new());
        }
        return Err(Unsupported(format!(
            "{}: DT_NEEDED without an interpreter",
            program.display()
        )));
    };
    let mut out = vec![PathBuf::from(&interp)];
    // Names already satisfied (glibc matches a DT_NEEDED against loaded objects' names and sonames).
    let mut loaded: HashSet<String> = HashSet::new();
    loaded.extend(
        Path::new(&interp)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    );
    let exe_rpath = exe.rpath.clone();
    // (object, the RPATHs of its chain of loaders) in load order.
    let mut queue: VecDeque<(ElfDeps, Vec<String>)> = VecDeque::new();
    queue.push_back((exe, Vec::new()));
    while let Some((obj, loaders_rpath)) = queue.pop_front() {
        let chain: Vec<String> = obj.rpath.iter().chain(&loaders_rpath).cloned().collect();
        for name in &obj.needed {
            if loaded.contains(name) {
                continue;
            }
            if name.contains('/') {
                return Err(Unsupported(format!("DT_NEEDED with a path: {name}")));
            }
            let (path, deps) = find(name, &obj, &chain, &exe_rpath, ld_library_path)?;
            loaded.insert(name.clone());
            loaded.extend(deps.soname.clone());
            out.push(path);
            queue.push_back((deps, chain.clone()));
        }
    }
    Ok(out)
}

/// glibc's search for `name` needed by `loader`: RPATHs (loader chain, then the executable) unless the
/// loader has a RUNPATH, `LD_LIBRARY_PATH`, the loader's RUNPATH, `/etc/ld.so.cache`.
fn find(
    name: &str,
    loader: &ElfDeps,
    rpath_chain: &[String],
    exe_rpath: &[String],
    ld_library_path: &[PathBuf],
) -> Result<(PathBuf, ElfDeps), Unsupported> {
    let rpaths: &[String] = if loader.runpath.is_none() {
        rpath_chain
    } else {
        &[]
    };
    let exe_rpaths: &[String] = if loader.runpath.is_none() {
        exe_rpath
    } else {
        &[]
    };
    let dirs = rpaths
        .iter()
        .chain(exe_rpaths)
        .map(PathBuf::from)
        .chain(ld_library_path.iter().cloned())
        .chain(loader.runpath.iter().flatten().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if let Some(found) = try_load(&candidate)? {
            return Ok(found);
        }
    }
    let hit = ld_cache()?.lookup(name);
    if hit.hwcaps {
        return Err(Unsupported(format!("{name} has glibc-hwcaps variants")));
    }
    for candidate in &hit.paths {
        if let Some(found) = try_load(candidate)? {
            return Ok(found);
        }
    }
    Err(Unsupported(format!(
        "{name} is not in a search path or the cache"
    )))
}

/// `Some` when `path` exists and is a loadable x86-64 object; `None` to keep searching.
fn try_load(path: &Path) -> Result<Option<(PathBuf, ElfDeps)>, Unsupported> {
    if !path.is_file() {
        return Ok(None);
    }
    match read_elf(path, path.parent().unwrap_or(Path::new("/"))) {
        Ok(d) => Ok(Some((path.to_path_buf(), d))),
        Err(ReadError::Incompatible) => Ok(None),
        Err(ReadError::Unsupported(s)) => Err(Unsupported(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(flags: u32, key: u32, value: u32, hwcap: u64) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend(flags.to_le_bytes());
        e.extend(key.to_le_bytes());
        e.extend(value.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        e.extend(hwcap.to_le_bytes());
        e
    }

    #[test]
    fn parses_the_new_cache_format_and_keeps_only_x86_64_libc6() {
        let strings_at = (CACHE_HEADER + 3 * CACHE_ENTRY) as u32;
        let strings = b"libz.so.1\0/lib/x86_64-linux-gnu/libz.so.1\0/lib32/libz.so.1\0";
        let mut b = CACHE_MAGIC.to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((strings.len() as u32).to_le_bytes());
        b.resize(CACHE_HEADER, 0);
        b.extend(entry(0x0303, strings_at, strings_at + 10, 0));
        b.extend(entry(0x0803, strings_at, strings_at + 42, 0)); // 32-bit: skipped
        b.extend(entry(0x0303, strings_at, strings_at + 10, 1 << 62)); // hwcaps variant
        b.extend(strings);
        let truncated = b[..CACHE_HEADER + 10].to_vec();
        let c = LdCache::parse(b).unwrap();
        let hit = c.lookup("libz.so.1");
        assert_eq!(
            hit.paths,
            [PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1")]
        );
        assert!(hit.hwcaps);
        assert_eq!(c.lookup("libzz.so.1"), CacheHit::default());
        assert!(LdCache::parse(b"ld.so-1.7.0".to_vec()).is_none());
        // Truncated: refused, not read past the end.
        assert!(LdCache::parse(truncated).is_none());
    }

    #[test]
    fn missing_and_non_elf_files_are_skipped_like_the_loader_does() {
        assert!(try_load(Path::new("/nonexistent/libx.so"))
            .unwrap()
            .is_none());
        let dir = std::env::temp_dir().join(format!("cs-elf-deps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("libnot-elf.so.1");
        std::fs::write(&text, b"INPUT(-lc)\n").unwrap();
        assert!(try_load(&text).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
