//! UEFI boot on FAT32: the ISO's own efi/boot/bootx64.efi, copied with the other files; this module finds it.

use crate::media::SourceEntry;

pub const UEFI_LOADER: &str = "efi/boot/bootx64.efi";

/// The ISO's removable-media loader for x86_64 (FAT and the firmware ignore case), when present and not empty.
pub fn find_loader(entries: &[SourceEntry]) -> Option<&SourceEntry> {
    entries.iter().find(|e| !e.is_dir && e.size > 0 && e.path.eq_ignore_ascii_case(UEFI_LOADER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_loader_whatever_the_case() {
        let e = |p: &str, s| SourceEntry { path: p.into(), is_dir: false, size: s, mtime: 0 };
        assert!(find_loader(&[e("EFI/BOOT/BOOTX64.EFI", 10)]).is_some());
        assert!(find_loader(&[e("efi/boot/bootx64.efi", 0)]).is_none(), "an empty loader does not count");
        assert!(find_loader(&[e("efi/boot/bootia32.efi", 10)]).is_none());
    }
}
