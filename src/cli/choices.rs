//! The library's option enums as the command line names them: clap stays out of library types.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::boot::BootMode;
use crate::media::unattend::Bypass;
use crate::protocol::{Driver, Table};
use crate::stick::choose::FsRequest;

/// An option enum offered on the command line: every value with its name and its help line.
pub trait Named: Copy + Send + Sync + 'static {
    const ALL: &'static [(Self, &'static str, &'static str)];
}

/// clap's parser for a `Named` enum: lists the names (with their help) and returns the value.
pub fn parser<T: Named>() -> impl TypedValueParser<Value = T> {
    let values = T::ALL.iter().map(|&(_, name, help)| {
        let v = PossibleValue::new(name);
        if help.is_empty() { v } else { v.help(help) }
    });
    PossibleValuesParser::new(values).map(|s: String| {
        // PossibleValuesParser let only these names through.
        T::ALL.iter().find(|(_, name, _)| *name == s).map(|&(v, _, _)| v).expect("clap checked the name")
    })
}

/// The name the command line uses for `value`.
pub fn name_of<T: Named + PartialEq>(value: T) -> &'static str {
    T::ALL.iter().find(|(v, _, _)| *v == value).map_or("?", |&(_, name, _)| name)
}

impl Named for Driver {
    const ALL: &'static [(Self, &'static str, &'static str)] =
        &[(Driver::Auto, "auto", ""), (Driver::Kernel, "kernel", ""), (Driver::Userspace, "userspace", "")];
}

impl Named for Table {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (Table::Mbr, "mbr", "MBR: boots under BIOS and UEFI"),
        (Table::Gpt, "gpt", "GPT with a protective MBR: UEFI only"),
    ];
}

impl Named for BootMode {
    const ALL: &'static [(Self, &'static str, &'static str)] =
        &[(BootMode::Bios, "bios", ""), (BootMode::Uefi, "uefi", ""), (BootMode::Both, "both", "")];
}

impl Named for FsRequest {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            FsRequest::Auto,
            "auto",
            "FAT32 (splitting a big install.wim or install.esd) unless another file is over 4 GiB, then NTFS",
        ),
        (
            FsRequest::Fat32,
            "fat32",
            "FAT32: boots on every UEFI firmware; files over 4 GiB other than install.wim/esd are refused",
        ),
        (FsRequest::Ntfs, "ntfs", "NTFS, with a small FAT bridge partition for UEFI boot"),
    ];
}

impl Named for Bypass {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (Bypass::Tpm, "tpm", "Skip the TPM 2.0 requirement (LabConfig\\BypassTPMCheck)"),
        (Bypass::Secureboot, "secureboot", "Skip the Secure Boot requirement (LabConfig\\BypassSecureBootCheck)"),
        (Bypass::Ram, "ram", "Skip the 4 GiB RAM requirement (LabConfig\\BypassRAMCheck)"),
        (
            Bypass::OnlineAccount,
            "online-account",
            "Allow a local account without network during setup (OOBE\\BypassNRO)",
        ),
        (Bypass::All, "all", "All of the above"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete<T: Named + PartialEq + std::fmt::Debug>(every: &[T]) {
        for v in every {
            assert_ne!(name_of(*v), "?", "{v:?} has no command-line name");
        }
        assert_eq!(T::ALL.len(), every.len());
    }

    /// Every variant has a name; a new variant without one fails here (the matches are exhaustive).
    #[test]
    fn every_value_is_named() {
        let d = |d: Driver| match d {
            Driver::Auto | Driver::Kernel | Driver::Userspace => d,
        };
        complete(&[d(Driver::Auto), Driver::Kernel, Driver::Userspace]);
        let t = |t: Table| match t {
            Table::Mbr | Table::Gpt => t,
        };
        complete(&[t(Table::Mbr), Table::Gpt]);
        let b = |b: BootMode| match b {
            BootMode::Bios | BootMode::Uefi | BootMode::Both => b,
        };
        complete(&[b(BootMode::Bios), BootMode::Uefi, BootMode::Both]);
        let f = |f: FsRequest| match f {
            FsRequest::Auto | FsRequest::Fat32 | FsRequest::Ntfs => f,
        };
        complete(&[f(FsRequest::Auto), FsRequest::Fat32, FsRequest::Ntfs]);
        let y = |y: Bypass| match y {
            Bypass::Tpm | Bypass::Secureboot | Bypass::Ram | Bypass::OnlineAccount | Bypass::All => y,
        };
        complete(&[y(Bypass::Tpm), Bypass::Secureboot, Bypass::Ram, Bypass::OnlineAccount, Bypass::All]);
    }

    #[test]
    fn names_parse_back() {
        use clap::builder::TypedValueParser as _;
        let cmd = clap::Command::new("t");
        let p = parser::<FsRequest>();
        let got = p.parse_ref(&cmd, None, std::ffi::OsStr::new("ntfs")).unwrap();
        assert_eq!(got, FsRequest::Ntfs);
        assert!(p.parse_ref(&cmd, None, std::ffi::OsStr::new("exfat")).is_err());
    }
}
