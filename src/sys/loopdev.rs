//! Loop devices through raw ioctls: always attached with LOOP_CONFIGURE and LO_FLAGS_AUTOCLEAR, so they detach
//! by themselves when the last holder (our fd, or a mount) goes away.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

// The loop ioctls are plain numbers in <linux/loop.h> (0x4C00 + n, not _IOW-encoded): declared "bad".
nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
// <linux/fs.h>: BLKGETSIZE64 is _IOR(0x12, 114, size_t) but writes a u64; BLKRRPART is _IO(0x12, 95).
nix::ioctl_read_bad!(blk_getsize64, nix::request_code_read!(0x12, 114, std::mem::size_of::<libc::size_t>()), u64);
nix::ioctl_none!(blk_rrpart, 0x12, 95);
nix::ioctl_none!(blk_flsbuf, 0x12, 97);
// BLKSSZGET is _IO(0x12, 104) and writes an int.
nix::ioctl_read_bad!(blk_sszget, nix::request_code_none!(0x12, 104), libc::c_int);
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("cannot open /dev/loop-control: {0} (is the loop module loaded?)")]
    OpenControl(#[source] std::io::Error),
    #[error("no free loop device: {0}")]
    GetFree(#[source] std::io::Error),
    #[error("cannot open {path}: {source}")]
    OpenDevice {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot attach {backing} to {device}: {source}")]
    Configure {
        device: PathBuf,
        backing: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free loop device after {0} attempts (others kept taking them)")]
    Exhausted(u32),
}

/// Where a loop device reads from: a window of a backing file or block device.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopWindow {
    pub offset: u64,
    /// 0 = to the end of the backing file.
    pub size: u64,
    pub read_only: bool,
    /// The loop device reads and writes its backing file with direct I/O (LO_FLAGS_DIRECT_IO), so its data is
    /// not cached twice (once for the loop device, once for the file). Where the kernel cannot (the backing
    /// file's filesystem has no O_DIRECT, or the window is not aligned), the device is attached without it.
    pub direct_io: bool,
}

/// An attached autoclear loop device. Dropping it closes our fd: the kernel detaches the device as soon as
/// nothing else (a mount) holds it.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    file: File,
}

impl LoopDevice {
    /// Attach `backing` (an open file or block device) with LOOP_CONFIGURE + autoclear. Retries when another
    /// process grabs the free device between LOOP_CTL_GET_FREE and LOOP_CONFIGURE (EBUSY), as systemd does.
    pub fn attach(backing: &File, backing_path: &Path, window: LoopWindow) -> Result<LoopDevice, LoopError> {
        Self::attach_with_block_size(backing, backing_path, window, 0)
    }

    /// `attach` with the device's logical block size set (512, 1024, 2048 or 4096; 0: the kernel's default,
    /// 512): a partition window of a 4096-byte-sector disk is a 4096-byte-sector device too.
    pub fn attach_with_block_size(
        backing: &File,
        backing_path: &Path,
        window: LoopWindow,
        block_size: u32,
    ) -> Result<LoopDevice, LoopError> {
        let control =
            OpenOptions::new().read(true).write(true).open("/dev/loop-control").map_err(LoopError::OpenControl)?;
        const ATTEMPTS: u32 = 64;
        let mut direct_io = window.direct_io;
        for attempt in 0..ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number; the fd is open.
            let nr = unsafe { loop_ctl_get_free(control.as_raw_fd()) }
                .map_err(|e| LoopError::GetFree(std::io::Error::from(e)))?;
            let path = PathBuf::from(format!("/dev/loop{nr}"));
            let file = match OpenOptions::new().read(true).write(!window.read_only).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt + 1 < ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(source) => return Err(LoopError::OpenDevice { path, source }),
            };
            let mut flags = LO_FLAGS_AUTOCLEAR;
            if window.read_only {
                flags |= LO_FLAGS_READ_ONLY;
            }
            if direct_io {
                flags |= LO_FLAGS_DIRECT_IO;
            }
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size,
                info: LoopInfo64 {
                    lo_device: 0,
                    lo_inode: 0,
                    lo_rdevice: 0,
                    lo_offset: window.offset,
                    lo_sizelimit: window.size,
                    lo_number: 0,
                    lo_encrypt_type: 0,
                    lo_encrypt_key_size: 0,
                    lo_flags: flags,
                    lo_file_name: file_name_field(backing_path),
                    lo_crypt_name: [0; 64],
                    lo_encrypt_key: [0; 32],
                    lo_init: [0; 2],
                },
                reserved: [0; 8],
            };
            // SAFETY: `config` is a fully initialised struct loop_config that outlives the call; the kernel only
            // reads it.
            let err = match unsafe { loop_configure(file.as_raw_fd(), &config) } {
                Ok(_) => return Ok(LoopDevice { path, file }),
                Err(e) => std::io::Error::from(e),
            };
            if direct_io && err.raw_os_error() == Some(libc::EINVAL) {
                // This backing cannot do direct I/O: the same device, without it.
                direct_io = false;
                continue;
            }
            if err.raw_os_error() == Some(libc::EBUSY) {
                // Someone else took it between GET_FREE and CONFIGURE: back off a little and try another.
                std::thread::sleep(Duration::from_millis(1 + u64::from(attempt) * 2));
                continue;
            }
            return Err(LoopError::Configure { device: path, backing: backing_path.to_path_buf(), source: err });
        }
        Err(LoopError::Exhausted(ATTEMPTS))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel's name of the device ("loop3"), as /sys/class/block and the stall watchdog know it.
    pub fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

fn file_name_field(path: &Path) -> [u8; 64] {
    let mut out = [0u8; 64];
    let bytes = path.as_os_str().as_encoded_bytes();
    let n = bytes.len().min(63);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Size in bytes of an open block device (BLKGETSIZE64) or regular file.
pub fn device_size(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live local; the fd is open.
        unsafe { blk_getsize64(file.as_raw_fd(), &mut size) }?;
        Ok(size)
    } else {
        Ok(meta.len())
    }
}

/// The logical sector size of an open block device (BLKSSZGET); 512 for a regular file (an image is laid out in
/// 512-byte sectors).
pub fn logical_sector_size(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return Ok(512);
    }
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at a live local; the fd is open.
    unsafe { blk_sszget(file.as_raw_fd(), &mut size) }?;
    Ok(u64::try_from(size).unwrap_or(0))
}

/// Detach a loop device (LOOP_CLR_FD; the kernel detaches lazily while the device is still busy).
pub fn clear_fd(device: &File) -> std::io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument; the fd is open for the duration of the call.
    unsafe { loop_clr_fd(device.as_raw_fd()) }?;
    Ok(())
}

/// Have the kernel read a disk's partition table again (BLKRRPART), through `disk`, an open fd of the whole
/// disk (while another fd holds it exclusively, only that one may ask).
pub fn reread_partitions(disk: &File) -> std::io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the fd is open for the duration of the call.
    unsafe { blk_rrpart(disk.as_raw_fd()) }?;
    Ok(())
}

/// Drop a block device's buffer cache (BLKFLSBUF), so that the next reads come from the device.
pub fn flush_buffers(device: &File) -> std::io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument; the fd is open for the duration of the call.
    unsafe { blk_flsbuf(device.as_raw_fd()) }?;
    Ok(())
}

/// A second handle on the same open device with O_DIRECT (through /proc/self/fd: the very device, whatever
/// its path leads to now), checked to be that device.
pub fn reopen_direct(device: &File) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", device.as_raw_fd()))?;
    let (want, got) = (device.metadata()?, f.metadata()?);
    if (want.dev(), want.ino(), want.rdev()) != (got.dev(), got.ino(), got.rdev()) {
        return Err(std::io::Error::other("reopened, it is another file"));
    }
    Ok(f)
}

/// The backing file of /dev/loopN, exactly (its name need not be UTF-8), or None when it is not attached (read
/// from sysfs: `losetup -l` is not reliable for this).
pub fn backing_path(loop_name: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut bytes = std::fs::read(format!("/sys/block/{loop_name}/loop/backing_file")).ok()?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// The backing file of /dev/loopN as text (for messages: bytes that are not UTF-8 become U+FFFD), or None when
/// it is not attached.
pub fn backing_file(loop_name: &str) -> Option<String> {
    backing_path(loop_name).map(|p| p.to_string_lossy().into_owned())
}

/// Every attached loop device with its exact backing file: (name, backing file).
pub fn attached_paths() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/block") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("loop")
                && let Some(b) = backing_path(&name)
            {
                out.push((name, b));
            }
        }
    }
    out.sort();
    out
}

/// Every attached loop device with its backing file as text (see `backing_file`).
pub fn attached() -> Vec<(String, String)> {
    attached_paths().into_iter().map(|(n, b)| (n, b.to_string_lossy().into_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn request_numbers_are_the_kernels() {
        // <linux/fs.h> on 64-bit: BLKGETSIZE64 0x80081272, BLKRRPART 0x125f.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(nix::request_code_read!(0x12, 114, std::mem::size_of::<libc::size_t>()), 0x8008_1272);
        assert_eq!(nix::request_code_none!(0x12, 95), 0x125F);
    }

    /// On a loop device of the test's own: the size is the backing file's, BLKRRPART reaches the driver
    /// (a loop device without partition scanning answers EINVAL; a wrong request number would get ENOTTY),
    /// and LOOP_CLR_FD is accepted (with our fd still open the kernel detaches once it is closed).
    #[test]
    fn block_ioctls_on_a_loop_device() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
            crate::report_skip("block_ioctls_on_a_loop_device", "needs root and loop devices");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A name that is not UTF-8: sysfs gives it back byte for byte.
        let path = dir.path().join(std::ffi::OsStr::from_bytes(b"disk\xff.img"));
        let backing = OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        backing.set_len(3 << 20).unwrap();
        let lo = LoopDevice::attach(&backing, &path, LoopWindow::default()).unwrap();
        assert_eq!(device_size(lo.file()).unwrap(), 3 << 20);
        if let Err(e) = reread_partitions(lo.file()) {
            assert_ne!(e.raw_os_error(), Some(libc::ENOTTY), "BLKRRPART not understood: {e}");
        }
        assert_eq!(backing_path(&lo.name()), Some(path.clone()));
        assert!(attached_paths().contains(&(lo.name(), path.clone())));
        assert!(backing_file(&lo.name()).is_some_and(|b| b.ends_with("disk\u{fffd}.img")));
        clear_fd(lo.file()).unwrap();
        let name = lo.name();
        drop(lo);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while backing_file(&name).is_some() {
            assert!(std::time::Instant::now() < deadline, "{name} still attached after LOOP_CLR_FD and close");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
