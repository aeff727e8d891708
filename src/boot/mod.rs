//! Boot code: BIOS through GRUB's ntldr from the MBR gap, UEFI through the ISO's own loader.

pub mod bios;
pub mod revocation;
pub mod uefi;

/// Which firmware the stick should boot on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BootMode {
    Bios,
    Uefi,
    Both,
}

impl BootMode {
    pub fn bios(self) -> bool {
        matches!(self, BootMode::Bios | BootMode::Both)
    }
    pub fn uefi(self) -> bool {
        matches!(self, BootMode::Uefi | BootMode::Both)
    }
}
