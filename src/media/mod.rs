//! The source ISO: the userspace UDF/ISO9660 reader, the kernel-mount source, and Windows layout detection.

pub mod iso;

/// One directory or file of the source, as the copy engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// Path relative to the root, components joined with '/', no leading slash ("sources/install.wim").
    pub path: String,
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (UTC).
    pub mtime: i64,
}
pub mod source;
pub mod unattend;
pub mod wim;
pub mod wimsplit;
