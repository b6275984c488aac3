//! Finding and reading the PC firmware image the way QEMU does (`qemu_find_file` with
//! QEMU_FILE_TYPE_BIOS, hw/i386/x86.c `x86_bios_rom_init`): `-bios NAME` or `bios-256k.bin`,
//! taken as given if readable, else looked up in the `-L` directories and then in the
//! directories Debian's QEMU searches.

use std::path::{Path, PathBuf};

use rvmm_cli::FirmwareConfig;

use crate::input::{read_input, InputError};

/// SeaBIOS as QEMU's pc and q35 machines use it.
pub const DEFAULT_BIOS: &str = "bios-256k.bin";
/// Debian's QEMU: its data directory, then its configured firmware path
/// (`--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu`).
const SYSTEM_DIRS: &[&str] = &[
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/usr/lib/ipxe/qemu",
];
/// QEMU maps images in 64 KiB units.
const BIOS_GRANULE: u64 = 64 << 10;
/// The largest image: the flash area below 4 GiB that no device uses (16 MiB, as on the
/// chipsets QEMU models; the LAPIC and IOAPIC sit just below it).
const BIOS_MAX: u64 = 16 << 20;

/// Why the firmware could not be loaded; QEMU's message first.
#[derive(Debug, thiserror::Error)]
pub enum BiosError {
    #[error("could not find PC BIOS '{name}' (searched: {searched}); install Debian's 'seabios' package or give -bios FILE / -L DIR")]
    NotFound { name: String, searched: String },
    #[error("could not load PC BIOS '{}': its size ({size} bytes) is not a positive multiple of 64 KiB", path.display())]
    BadSize { path: PathBuf, size: u64 },
    #[error(transparent)]
    Read(#[from] InputError),
}

/// The image file for `config`: the name as given if it exists, else the first match in the
/// search directories.
pub fn find_bios(config: &FirmwareConfig) -> Result<PathBuf, BiosError> {
    let name = config
        .bios
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIOS));
    find_in(&name, &config.data_dirs, SYSTEM_DIRS)
}

/// A device's option ROM (`vgabios-stdvga.bin`), searched as QEMU's `qemu_find_file` does
/// for QEMU_FILE_TYPE_BIOS: as given, then `-L` directories, then Debian's QEMU directories.
/// The error lists the directories searched.
pub fn find_rom(name: &str, data_dirs: &[PathBuf]) -> Result<PathBuf, String> {
    find_in(Path::new(name), data_dirs, SYSTEM_DIRS).map_err(|e| match e {
        BiosError::NotFound { searched, .. } => searched,
        other => other.to_string(),
    })
}

fn find_in(name: &Path, user_dirs: &[PathBuf], system: &[&str]) -> Result<PathBuf, BiosError> {
    if name.exists() {
        return Ok(name.to_path_buf());
    }
    let dirs: Vec<PathBuf> = user_dirs
        .iter()
        .cloned()
        .chain(system.iter().map(PathBuf::from))
        .collect();
    // An absolute path is not searched for.
    if !name.is_absolute() {
        if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.exists()) {
            return Ok(found);
        }
    }
    Err(BiosError::NotFound {
        name: name.display().to_string(),
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Reads the image at `path`, checking its size as QEMU does.
pub fn read_bios(path: &Path) -> Result<Vec<u8>, BiosError> {
    let image = read_input("PC BIOS", path, BIOS_MAX, "a BIOS image can have")?;
    let size = image.len() as u64;
    if size == 0 || !size.is_multiple_of(BIOS_GRANULE) {
        return Err(BiosError::BadSize {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_is_as_given_then_user_dirs_then_system() {
        let dir = std::env::temp_dir().join(format!("rvmm-bios-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("x.bin"), [0u8; 16]).unwrap();
        let found = find_in(Path::new("x.bin"), &[a.clone(), b.clone()], &[]).unwrap();
        assert_eq!(found, b.join("x.bin"));
        std::fs::write(a.join("x.bin"), [0u8; 16]).unwrap();
        let found = find_in(Path::new("x.bin"), &[a.clone(), b.clone()], &[]).unwrap();
        assert_eq!(found, a.join("x.bin"));
        let e = find_in(
            Path::new("nope.bin"),
            std::slice::from_ref(&a),
            &["/sys-dir"],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("could not find PC BIOS 'nope.bin' (searched: "),
            "{e}"
        );
        assert!(e.to_string().contains("/sys-dir"), "{e}");
        // Wrong sizes are refused, naming the file.
        let bad = a.join("x.bin");
        let e = read_bios(&bad).unwrap_err();
        assert!(
            e.to_string().contains("not a positive multiple of 64 KiB"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
