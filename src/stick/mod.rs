//! The stick: what the target is, the safety checks, the partition table and the FAT32 filesystem.

pub mod choose;
pub mod disk;
pub mod fat;
pub mod fatwrite;
pub mod gpt;
pub mod label;
pub mod list;
pub mod mbr;
pub mod names;
pub mod ntfs;
pub mod safety;
pub mod units;
