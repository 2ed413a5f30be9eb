//! The shared libraries a dynamic binary needs, so that its image holds them
//! at their host paths and needs no base image (what distroless/cc gives).

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Command,
};

use crate::Error;

/// One library the dynamic loader loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// The name the loader looks for: a soname such as `libc.so.6`, or for
    /// the loader itself its absolute path.
    pub name: String,
    /// Where it is on this machine, as the loader found it (a symlink is
    /// kept as the path; its target's content goes into the image).
    pub path: PathBuf,
}

/// What `ldd` says about a binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linkage {
    Static,
    Dynamic(Vec<Library>),
}

/// Parses `ldd` output (stdout and stderr together):
///
/// ```text
///     linux-vdso.so.1 (0x00007ffd...)                       (no file: skipped)
///     libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
///     /lib64/ld-linux-x86-64.so.2 (0x...)                   (the loader)
///     libfoo.so.1 => not found                               (an error)
/// ```
///
/// `not a dynamic executable` and `statically linked` mean a static binary.
pub fn parse_ldd(output: &str) -> Result<Linkage, String> {
    let mut libs: Vec<Library> = Vec::new();
    let mut missing = Vec::new();
    let mut is_static = false;
    for line in output.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.contains("not a dynamic executable") || line == "statically linked" {
            is_static = true;
            continue;
        }
        if line.ends_with(':') && !line.contains("=>") {
            // "/path/to/binary:", a header when ldd is given several files.
            continue;
        }
        // Drop the load address: "... (0x00007f...)".
        let line = match line.rsplit_once(" (0x") {
            Some((head, tail)) if tail.ends_with(')') => head.trim_end(),
            _ => line,
        };
        let (name, path) = match line.split_once("=>") {
            Some((name, path)) => (name.trim(), path.trim()),
            None if line.starts_with('/') => (line, line),
            // linux-vdso.so.1 and the like are in the kernel, not in a file.
            None => continue,
        };
        if path == "not found" {
            missing.push(name.to_string());
            continue;
        }
        if !path.starts_with('/') {
            // "linux-vdso.so.1 =>  (0x...)" on older glibc: no file.
            continue;
        }
        let lib = Library {
            name: name.to_string(),
            path: PathBuf::from(path),
        };
        if !libs.contains(&lib) {
            libs.push(lib);
        }
    }
    if !missing.is_empty() {
        return Err(format!("not found: {}", missing.join(", ")));
    }
    match (is_static, libs.is_empty()) {
        (_, false) => Ok(Linkage::Dynamic(libs)),
        (true, true) => Ok(Linkage::Static),
        (false, true) => Err(format!("no libraries in ldd's output:\n{output}")),
    }
}

/// Runs `ldd` on `binary` (which runs the binary's dynamic loader on it: use
/// only binaries you would run).
pub fn libraries(binary: &Path) -> Result<Linkage, Error> {
    libraries_of(&[binary])
}

/// Runs `ldd` once on several binaries or shared objects: the libraries any
/// of them needs, each once. Static only if all are.
pub fn libraries_of(binaries: &[&Path]) -> Result<Linkage, Error> {
    let binary = binaries.first().copied().unwrap_or(Path::new(""));
    let out = Command::new("ldd")
        .args(binaries)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Ldd {
            binary: binary.into(),
            detail: format!("could not run ldd: {e}"),
        })?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let linkage = parse_ldd(&text).map_err(|detail| Error::Ldd {
        binary: binary.into(),
        detail,
    })?;
    if !out.status.success() && linkage != Linkage::Static {
        return Err(Error::Ldd {
            binary: binary.into(),
            detail: format!("ldd exited with {}:\n{}", out.status, text.trim()),
        });
    }
    Ok(linkage)
}

/// Whether `path` is an x86-64 Linux ELF executable without a program
/// interpreter (a static binary, static-pie included). Anything that is not
/// an x86-64 ELF file is an error, since the images are linux/amd64.
pub fn is_static(path: &Path) -> Result<bool, Error> {
    let not_exe = |detail: &str| Error::NotExecutable {
        path: path.into(),
        detail: detail.into(),
    };
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh)
        .map_err(|_| not_exe("too short for an ELF file"))?;
    if &eh[..4] != b"\x7fELF" {
        return Err(not_exe("not an ELF file"));
    }
    if eh[4] != 2 || eh[5] != 1 || u16::from_le_bytes([eh[18], eh[19]]) != 62 {
        return Err(not_exe("not a 64-bit little-endian x86-64 ELF file"));
    }
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([eh[i], eh[i + 1]]));
    let phoff = u64::from_le_bytes(eh[32..40].try_into().expect("8 bytes"));
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    if phentsize < 4 {
        return Err(not_exe("ELF program headers are malformed"));
    }
    let mut phdrs = vec![0u8; (phentsize * phnum) as usize];
    f.seek(SeekFrom::Start(phoff))
        .and_then(|_| f.read_exact(&mut phdrs))
        .map_err(|_| not_exe("ELF program headers are cut off"))?;
    const PT_INTERP: u32 = 3;
    let has_interp = phdrs
        .chunks_exact(phentsize as usize)
        .any(|ph| u32::from_le_bytes(ph[..4].try_into().expect("4 bytes")) == PT_INTERP);
    Ok(!has_interp)
}

/// The directories glibc's loader searches without configuration.
const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Files (image path, host path) and symlinks (image path, target) that put
/// `libs` into an image where the loader finds them, and an
/// `LD_LIBRARY_PATH` when some are outside the default directories.
pub(crate) struct Placement {
    pub files: Vec<(String, PathBuf)>,
    pub symlinks: Vec<(String, String)>,
    pub library_path: Option<String>,
}

pub(crate) fn place(libs: &[Library]) -> Placement {
    let mut placement = Placement {
        files: Vec::new(),
        symlinks: Vec::new(),
        library_path: None,
    };
    let mut extra_dirs: Vec<String> = Vec::new();
    for lib in libs {
        let image_path = lib.path.to_string_lossy().into_owned();
        if !placement.files.iter().any(|(p, _)| *p == image_path) {
            placement.files.push((image_path.clone(), lib.path.clone()));
        }
        let (Some(dir), Some(file_name)) = (lib.path.parent(), lib.path.file_name()) else {
            continue;
        };
        let dir = dir.to_string_lossy().into_owned();
        // The loader searches for the soname; if the file it found has
        // another name, give it that name too.
        if !lib.name.contains('/') && file_name.to_string_lossy() != lib.name {
            let link = format!("{dir}/{}", lib.name);
            if !placement.symlinks.iter().any(|(p, _)| *p == link) {
                placement
                    .symlinks
                    .push((link, file_name.to_string_lossy().into_owned()));
            }
        }
        if !lib.name.contains('/')
            && !DEFAULT_LIBRARY_DIRS.contains(&dir.as_str())
            && !extra_dirs.contains(&dir)
        {
            extra_dirs.push(dir);
        }
    }
    if !extra_dirs.is_empty() {
        placement.library_path = Some(extra_dirs.join(":"));
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tests::fake_elf;

    const DEBIAN_LS: &str = "\tlinux-vdso.so.1 (0x00007ffc2d3f2000)
\tlibselinux.so.1 => /lib/x86_64-linux-gnu/libselinux.so.1 (0x00007f480e33b000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f480e159000)
\tlibpcre2-8.so.0 => /lib/x86_64-linux-gnu/libpcre2-8.so.0 (0x00007f480e0bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f480e3a2000)
";

    #[test]
    fn dynamic_output_lists_libraries_and_loader_but_not_vdso() {
        let Linkage::Dynamic(libs) = parse_ldd(DEBIAN_LS).unwrap() else {
            panic!("expected a dynamic binary");
        };
        let names: Vec<_> = libs.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "libselinux.so.1",
                "libc.so.6",
                "libpcre2-8.so.0",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert_eq!(libs[1].path, Path::new("/lib/x86_64-linux-gnu/libc.so.6"));
        assert_eq!(libs[3].path, Path::new("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn old_vdso_arrow_form_and_missing_address_are_handled() {
        let out = "\tlinux-vdso.so.1 =>  (0x00007fff5a1fe000)
\tlibm.so.6 => /lib/libm.so.6
\t/lib/ld-musl-x86_64.so.1 (0x7f0c2a1b5000)
";
        let Linkage::Dynamic(libs) = parse_ldd(out).unwrap() else {
            panic!("expected a dynamic binary");
        };
        assert_eq!(
            libs,
            [
                Library {
                    name: "libm.so.6".into(),
                    path: "/lib/libm.so.6".into()
                },
                Library {
                    name: "/lib/ld-musl-x86_64.so.1".into(),
                    path: "/lib/ld-musl-x86_64.so.1".into()
                },
            ]
        );
    }

    #[test]
    fn static_outputs() {
        assert_eq!(
            parse_ldd("\tnot a dynamic executable\n").unwrap(),
            Linkage::Static
        );
        assert_eq!(
            parse_ldd("/bin/busybox:\n\tnot a dynamic executable\n").unwrap(),
            Linkage::Static
        );
        assert_eq!(parse_ldd("\tstatically linked\n").unwrap(), Linkage::Static);
    }

    #[test]
    fn missing_library_is_an_error_naming_it() {
        let out = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f480e159000)\n";
        let err = parse_ldd(out).unwrap_err();
        assert!(err.contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn empty_output_is_an_error() {
        assert!(parse_ldd("\n").is_err());
    }

    #[test]
    fn placement_adds_soname_links_and_library_path() {
        let libs = [
            Library {
                name: "libc.so.6".into(),
                path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
            },
            Library {
                name: "libfoo.so.1".into(),
                path: "/opt/foo/lib/libfoo.so.1.2.3".into(),
            },
            Library {
                name: "/lib64/ld-linux-x86-64.so.2".into(),
                path: "/lib64/ld-linux-x86-64.so.2".into(),
            },
        ];
        let p = place(&libs);
        assert_eq!(p.files.len(), 3);
        assert_eq!(
            p.symlinks,
            [(
                "/opt/foo/lib/libfoo.so.1".to_string(),
                "libfoo.so.1.2.3".to_string()
            )]
        );
        assert_eq!(p.library_path.as_deref(), Some("/opt/foo/lib"));
    }

    #[test]
    fn elf_check_tells_static_from_dynamic() {
        let dir = tempfile::tempdir().unwrap();
        let (stat, dynamic) = (dir.path().join("static"), dir.path().join("dynamic"));
        fs::write(&stat, fake_elf(1)).unwrap(); // PT_LOAD only
        fs::write(&dynamic, fake_elf(3)).unwrap(); // PT_INTERP
        assert!(is_static(&stat).unwrap());
        assert!(!is_static(&dynamic).unwrap());
        assert!(!is_static(Path::new("/bin/ls")).unwrap());
        // Not an ELF file at all.
        let script = dir.path().join("script");
        fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(
            is_static(&script),
            Err(Error::NotExecutable { .. })
        ));
    }

    #[test]
    fn ldd_on_a_real_dynamic_binary_finds_libc_and_the_loader() {
        let Linkage::Dynamic(libs) = libraries(Path::new("/bin/ls")).unwrap() else {
            panic!("/bin/ls should be dynamic");
        };
        assert!(libs.iter().any(|l| l.name == "libc.so.6"), "{libs:?}");
        assert!(libs.iter().any(|l| l.name.starts_with('/')), "{libs:?}");
    }
}
