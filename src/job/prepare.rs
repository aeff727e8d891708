//! The Prepare step, in scratch space and before the target is touched: re-pack a WIM that cannot be split as it
//! is, extract the Windows 7 UEFI loader from install.wim, and the CA 2023 boot managers from boot.wim. Also the
//! tree as it will be written and its checks once prepared.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::boot::uefi;
use crate::copy::SourceTree;
use crate::media::SourceEntry;
use crate::media::source::Source;
use crate::media::wim::{self, FAT32_MAX_FILE, PART_MIB};
use crate::media::wimsplit;
use crate::protocol::{Step, Up};
use crate::stick::names;
use crate::stick::units::human;
use crate::sys::helper;
use crate::sys::loopdev::LoopDevice;
use crate::sys::staging::Staging;
use crate::sys::stop::stop_requested;
use crate::tree::{Added, Origin, StickTree, WimFrom};

use super::survey::{Survey, needed_bytes, plan_parts, split_summary};
use super::{Job, WriteError};

/// What Prepare made: the scratch space (held until the end: re-packed parts are read from it while they are
/// copied), the files added to the stick, and which WIM was split into how many parts.
pub(super) struct Prepared {
    pub scratch: Option<Staging>,
    pub added: Vec<Added>,
    pub split_report: Option<(String, usize)>,
}

impl Job<'_> {
    /// Prepare, only when the survey set scratch space aside; else just the files planned.
    pub(super) fn prepare(&mut self, source: &Source, s: &Survey, work: &Path) -> Result<Prepared, WriteError> {
        let entries = source.entries();
        let mut added = [s.ours.clone(), s.streamed.clone()].concat();
        let mut split_report = s.plans.first().map(|(i, plan)| (entries[*i].path.clone(), plan.parts.len()));
        if s.scratch_bytes == 0 {
            return Ok(Prepared { scratch: None, added, split_report });
        }
        self.enter(Step::Prepare)?;
        let scratch = Staging::create(&self.req.scratch_dir, s.scratch_bytes, &work.join("scratch"))?;
        self.link.send(&Up::Devices(vec![scratch.device_name()]))?;
        let mut wim_paths = Vec::new();
        let mut window_loops = Vec::new();
        for &i in &s.staged_wims {
            let path = if let Some(p) = source.local_path(i) {
                p
            } else if let Some((_, window)) = s.windows.iter().find(|(j, _)| *j == i) {
                let (file, iso_path, _, _) = source.file_window(i).expect("a window");
                let lo = LoopDevice::attach(file, iso_path, *window)?;
                let p = lo.path().to_path_buf();
                self.info(format!(
                    "wimlib reads {} in place in the ISO (a read-only loop device over its bytes: no copy)",
                    entries[i].path
                ))?;
                window_loops.push(lo);
                p
            } else {
                self.stage_file(source, i, &scratch.path().join(format!("source-{i}.wim")))?
            };
            wim_paths.push((i, path));
        }
        // The stall watchdog watches the window loops too: wimlib's reads move through them.
        let mut devices = vec![scratch.device_name()];
        devices.extend(window_loops.iter().map(LoopDevice::name));
        self.link.send(&Up::Devices(devices))?;
        let staged = |i: usize| wim_paths.iter().find(|(j, _)| *j == i).expect("staged").1.clone();
        for &(i, _) in &s.repack_info {
            let wim = staged(i);
            let packed = self.repack_wim(&wim, &entries[i], scratch.path())?;
            // A copy in scratch space is dropped as soon as nothing needs it (never a device or the ISO's
            // mounted file).
            if s.win7.is_none_or(|(w, _)| w != i) && s.copied.contains(&i) {
                let _ = std::fs::remove_file(&wim);
            }
            let parts = self.split_repacked(&packed, &entries[i], s.guid)?;
            // A re-packed WIM that fits FAT32 whole goes on as it is: nothing to report as split.
            if parts.len() > 1 {
                split_report = Some((entries[i].path.clone(), parts.len()));
            }
            added.extend(parts);
        }
        if let Some((i, image)) = s.win7 {
            added.push(self.extract_win7_loader(&staged(i), image, scratch.path(), s)?);
        }
        if let Some((i, image)) = s.ca2023 {
            added.extend(self.extract_ca2023(source, &staged(i), image, scratch.path(), s)?);
        }
        drop(window_loops);
        Ok(Prepared { scratch: Some(scratch), added, split_report })
    }

    /// The tree as it will be written (re-packed parts, the extracted loader), checked again: its names, and
    /// after a re-pack the stick's room.
    pub(super) fn check_prepared(&self, s: &Survey, plan: &StickTree) -> Result<(), WriteError> {
        names::check_names(s.names_target, plan)?;
        // The room, again, once the files are known: a re-pack's parts, --ca2023's boot managers and fonts.
        if !s.repack.is_empty() || s.ca2023.is_some() {
            let needed =
                needed_bytes(s.fs, &plan.entries, s.partitions.main.size, self.req.sector_size) + s.bridge_bytes;
            if needed > self.req.target_size {
                let (path, size) = (self.req.target.clone(), self.req.target_size);
                return Err(match s.repack.is_empty() {
                    false => WriteError::TooSmallAfterRepack { path, size, needed },
                    true => WriteError::TooSmallWithCa2023 { path, size, needed },
                });
            }
        }
        Ok(())
    }

    /// Copy an ISO file into the scratch space (wimlib reads WIMs from files), with progress.
    fn stage_file(&mut self, source: &Source, index: usize, dest: &Path) -> Result<PathBuf, WriteError> {
        let entry = &source.entries()[index];
        let err = |source| WriteError::Scratch { what: format!("copying {} to scratch space", entry.path), source };
        let mut from = source.open(index).map_err(err)?;
        let mut to = File::create(dest).map_err(err)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        let mut last = Instant::now();
        loop {
            if stop_requested() {
                return Err(WriteError::Stopped);
            }
            let n = from.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).map_err(err)?;
            done += n as u64;
            if last.elapsed() >= Duration::from_millis(200) {
                last = Instant::now();
                self.link.send(&Up::Progress { done, total: entry.size })?;
            }
        }
        if done != entry.size {
            return Err(WriteError::Copy(crate::copy::CopyError::ShortRead {
                path: entry.path.clone(),
                expected: entry.size,
                got: done,
            }));
        }
        Ok(dest.to_path_buf())
    }

    /// Re-pack a WIM that cannot be split as it is (solid, LZMS, pipable, ...) into a plain one in scratch space:
    /// `wimlib-imagex export WIM all OUT --compress=LZX:20`, with wimlib's own progress.
    fn repack_wim(&mut self, wim: &Path, entry: &SourceEntry, scratch: &Path) -> Result<PathBuf, WriteError> {
        let out = scratch.join("repacked.wim");
        self.info(format!(
            "Re-packing {} ({}) into a plain WIM ({}) that can be split",
            entry.path,
            human(entry.size),
            wim::REPACK_COMPRESSION
        ))?;
        let compress = format!("--compress={}", wim::REPACK_COMPRESSION);
        let args: [&OsStr; 5] =
            ["export".as_ref(), wim.as_os_str(), "all".as_ref(), out.as_os_str(), compress.as_ref()];
        let started = Instant::now();
        let link = &mut *self.link;
        let mut sent = None;
        // wimlib prints "Archiving file data: X MiB of Y MiB (Z%) done" as it goes (in uncompressed bytes).
        let result = helper::run_watching("wimlib-imagex", &args, "wimtools", &mut |stdout| {
            let progress = wim::export_progress(stdout);
            // Only when it moved: a frame counts as movement for the stall watchdog.
            if progress.is_some() && progress != sent {
                sent = progress;
                if let Some((done, total)) = progress {
                    let _ = link.send(&Up::Progress { done, total });
                }
            }
        });
        if let Err(helper::HelperError::Failed { stderr, .. }) = &result
            && stderr.contains("No space left on device")
        {
            return Err(WriteError::ScratchFull { wim: entry.path.clone(), dir: self.req.scratch_dir.clone() });
        }
        result?;
        let size = std::fs::metadata(&out)
            .map_err(|source| WriteError::Scratch { what: "reading the re-packed WIM's size".into(), source })?
            .len();
        if let Some((_, total)) = sent {
            self.link.send(&Up::Progress { done: total, total })?;
        }
        self.info(format!(
            "Re-packed {} into {} in {:.0} s",
            entry.path,
            human(size),
            started.elapsed().as_secs_f64()
        ))?;
        Ok(out)
    }

    /// The parts of a re-packed WIM (read from scratch space while they are copied), or the WIM itself in
    /// place of the original when it fits FAT32 whole.
    fn split_repacked(&mut self, packed: &Path, entry: &SourceEntry, guid: [u8; 16]) -> Result<Vec<Added>, WriteError> {
        let err = |source| WriteError::Scratch { what: format!("reading {}", packed.display()), source };
        let size = std::fs::metadata(packed).map_err(err)?.len();
        if size <= FAT32_MAX_FILE {
            self.info(format!("The re-packed WIM fits FAT32 whole: it becomes {}", entry.path))?;
            return Ok(vec![Added {
                path: entry.path.clone(),
                size,
                mtime: entry.mtime,
                origin: Origin::Staged(packed.to_path_buf()),
            }]);
        }
        let plan = wimsplit::plan(&mut File::open(packed).map_err(err)?, PART_MIB << 20, guid)
            .map_err(|e| WriteError::Repacked { wim: entry.path.clone(), what: e.to_string() })?;
        if let Some(p) = plan.parts.iter().find(|p| p.size > FAT32_MAX_FILE) {
            return Err(WriteError::PartTooBig { part: wim::part_name("install", p.number.into()), size: p.size });
        }
        self.info(format!("It {}", split_summary(&plan)))?;
        Ok(plan_parts(entry, WimFrom::Staged(packed.to_path_buf()), &plan))
    }

    /// Windows 7: extract the UEFI boot manager from install.wim's x64 image into efi/boot/bootx64.efi, and
    /// check that it is a non-empty x86_64 PE program (and what this PC's dbx says of it).
    fn extract_win7_loader(&mut self, wim: &Path, image: u32, scratch: &Path, s: &Survey) -> Result<Added, WriteError> {
        let dir = scratch.join("loader");
        std::fs::create_dir(&dir)
            .map_err(|source| WriteError::Scratch { what: "creating the loader directory".into(), source })?;
        let image_arg = image.to_string();
        let mut dest = OsString::from("--dest-dir=");
        dest.push(&dir);
        let args: [&OsStr; 7] = [
            "extract".as_ref(),
            wim.as_os_str(),
            image_arg.as_ref(),
            uefi::WIN7_LOADER_IN_WIM.as_ref(),
            &dest,
            "--no-acls".as_ref(),
            "--no-attributes".as_ref(),
        ];
        helper::run("wimlib-imagex", &args, "wimtools")?;
        // Never followed if it is a link, only a regular file, at most MAX_LOADER_BYTES; then kept in memory, so
        // the copy does not open the scratch file again.
        let data = uefi::read_extracted_loader(&dir.join("bootmgfw.efi"), uefi::WIN7_LOADER_IN_WIM)?;
        uefi::check_efi_x64(&data)
            .map_err(|what| crate::boot::uefi::UefiError::BadLoader { path: uefi::WIN7_LOADER_IN_WIM.into(), what })?;
        self.info(format!(
            "Windows 7: UEFI loader extracted from install.wim image {image} ({} bytes) as /{}",
            data.len(),
            uefi::UEFI_LOADER
        ))?;
        let name = format!("/{} (from install.wim image {image})", uefi::UEFI_LOADER);
        self.check_revocation(s.firmware.as_ref(), &name, &data, "")?;
        Ok(Added {
            path: uefi::UEFI_LOADER.into(),
            size: data.len() as u64,
            mtime: s.mtime_now,
            origin: Origin::Bytes(data),
        })
    }

    /// --ca2023: extract boot.wim's CA 2023 boot managers and fonts, check them, and return them as the files they
    /// replace: bootmgfw_EX.efi as the ISO's removable-media loader, bootmgr_EX.efi as /bootmgr.efi (when the ISO
    /// has one), Fonts_EX's `NAME_EX.ttf` as efi/microsoft/boot/fonts/NAME.ttf. The ISO's own files stay out.
    fn extract_ca2023(
        &mut self,
        source: &Source,
        wim: &Path,
        image: u32,
        scratch: &Path,
        s: &Survey,
    ) -> Result<Vec<Added>, WriteError> {
        const WIM: &str = uefi::BOOT_WIM;
        let entries = source.entries();
        let arch = s.uefi_arch.unwrap_or(uefi::Arch::X64);
        let dir = scratch.join("ca2023");
        std::fs::create_dir(&dir)
            .map_err(|source| WriteError::Scratch { what: "creating the CA 2023 directory".into(), source })?;
        helper::run("wimlib-imagex", &uefi::ca2023_extract_args(wim, image, &dir), "wimtools")?;
        let missing = |path: &str| uefi::UefiError::Ca2023Missing { image, path: path.into() };
        let efi_ex = uefi::extracted_dir(&dir, "EFI_EX", "/Windows/Boot/EFI_EX", WIM)?;
        // A boot manager: found by its exact name, read without following links, checked for the loader's arch.
        let program = |found: Option<PathBuf>, in_wim: &str| -> Result<Vec<u8>, uefi::UefiError> {
            let path = found.ok_or_else(|| missing(in_wim))?;
            let data = uefi::read_extracted(&path, in_wim, WIM)?;
            uefi::check_efi(&data, arch).map_err(|what| uefi::UefiError::Ca2023Bad {
                path: in_wim.into(),
                arch,
                what,
            })?;
            Ok(data)
        };
        let loader = program(
            efi_ex.as_deref().and_then(|d| uefi::find_child(d, "bootmgfw_EX.efi")),
            uefi::CA2023_LOADER_IN_WIM,
        )?;
        let loader_path = super::survey::find_file(entries, arch.loader_path())
            .map_or_else(|| arch.loader_path().to_string(), |i| entries[i].path.clone());
        self.check_revocation(s.firmware.as_ref(), &format!("/{loader_path} (--ca2023)"), &loader, "")?;
        let mut added = vec![Added {
            path: loader_path.clone(),
            size: loader.len() as u64,
            mtime: s.mtime_now,
            origin: Origin::Bytes(loader),
        }];
        self.info(format!(
            "--ca2023: /{loader_path} is {WIM} image {image}'s {} (signed by the Windows UEFI CA 2023)",
            uefi::CA2023_LOADER_IN_WIM
        ))?;
        if let Some(i) = super::survey::find_file(entries, uefi::BOOTMGR_EFI) {
            let (found, in_wim) = match efi_ex.as_deref().and_then(|d| uefi::find_child(d, "bootmgr_EX.efi")) {
                Some(p) => (Some(p), uefi::CA2023_BOOTMGR_IN_WIM[0]),
                None => (uefi::find_child(&dir, "bootmgr_EX.efi"), uefi::CA2023_BOOTMGR_IN_WIM[1]),
            };
            let data = program(found, in_wim).map_err(|e| match e {
                uefi::UefiError::Ca2023Missing { image, .. } => {
                    uefi::UefiError::Ca2023Missing { image, path: uefi::CA2023_BOOTMGR_IN_WIM.join(" or ") }
                }
                e => e,
            })?;
            self.info(format!("--ca2023: /{} is {WIM} image {image}'s {in_wim}", entries[i].path))?;
            self.check_revocation(s.firmware.as_ref(), &format!("/{} (--ca2023)", entries[i].path), &data, "")?;
            added.push(Added {
                path: entries[i].path.clone(),
                size: data.len() as u64,
                mtime: s.mtime_now,
                origin: Origin::Bytes(data),
            });
        }
        let fonts = self.ca2023_fonts(&dir, image, s.mtime_now)?;
        if fonts.is_empty() {
            self.link.send(&Up::Warning(format!(
                "--ca2023: {WIM} image {image} has no {}: the stick keeps the ISO's boot fonts",
                uefi::CA2023_FONTS_IN_WIM
            )))?;
        } else {
            self.info(format!(
                "--ca2023: {} fonts from {} replace the ISO's in /{}",
                fonts.len(),
                uefi::CA2023_FONTS_IN_WIM,
                uefi::FONTS_DIR
            ))?;
        }
        added.extend(fonts);
        Ok(added)
    }

    /// Fonts_EX's fonts, each read as a boot file (no links, regular files, bounded), renamed without `_EX`.
    fn ca2023_fonts(&mut self, dir: &Path, image: u32, mtime: i64) -> Result<Vec<Added>, WriteError> {
        const WIM: &str = uefi::BOOT_WIM;
        let Some(fonts_dir) = uefi::extracted_dir(dir, "Fonts_EX", uefi::CA2023_FONTS_IN_WIM, WIM)? else {
            return Ok(Vec::new());
        };
        let read_dir = std::fs::read_dir(&fonts_dir)
            .map_err(|source| WriteError::Scratch { what: "listing the CA 2023 fonts".into(), source })?;
        let mut names: Vec<String> = read_dir
            .take(4096)
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        let mut added: Vec<Added> = Vec::new();
        let mut bytes = 0u64;
        let mut others = Vec::new();
        for name in names {
            let Some(on_stick) = uefi::ex_font_name(&name) else {
                others.push(name);
                continue;
            };
            if added.len() == uefi::MAX_CA2023_FONTS {
                return Err(uefi::UefiError::Ca2023Fonts {
                    path: uefi::CA2023_FONTS_IN_WIM.into(),
                    what: format!("more than {} fonts, more than any Windows has", uefi::MAX_CA2023_FONTS),
                }
                .into());
            }
            let in_wim = format!("{}/{name}", uefi::CA2023_FONTS_IN_WIM);
            let data = uefi::read_extracted(&fonts_dir.join(&name), &in_wim, WIM)?;
            if !uefi::is_font(&data) {
                return Err(
                    uefi::UefiError::Ca2023Fonts { path: in_wim, what: "no TrueType or OpenType font".into() }.into()
                );
            }
            bytes += data.len() as u64;
            if bytes > uefi::MAX_CA2023_FONT_BYTES {
                return Err(uefi::UefiError::Ca2023Fonts {
                    path: uefi::CA2023_FONTS_IN_WIM.into(),
                    what: format!(
                        "fonts of more than {} bytes in all, more than any Windows has",
                        uefi::MAX_CA2023_FONT_BYTES
                    ),
                }
                .into());
            }
            added.push(Added {
                path: format!("{}/{on_stick}", uefi::FONTS_DIR),
                size: data.len() as u64,
                mtime,
                origin: Origin::Bytes(data),
            });
        }
        // What is not a font by name is left out, said once (a hostile WIM may hold thousands of names).
        if !others.is_empty() {
            let shown: Vec<String> = others.iter().take(3).map(|n| crate::cli::term::escape(n).into_owned()).collect();
            self.link.send(&Up::Warning(format!(
                "--ca2023: {} file(s) in {} of sources/boot.wim image {image} are not fonts named NAME_EX.ttf and are \
                 not copied: {}{}",
                others.len(),
                uefi::CA2023_FONTS_IN_WIM,
                shown.join(", "),
                if others.len() > 3 { ", ..." } else { "" }
            )))?;
        }
        Ok(added)
    }
}
