#!/usr/bin/env python3
"""Write the deterministic parts of the woesafe test ISO tree.

Usage: make_test_tree.py TREE_DIR WIMSRC_DIR [--big-file-mib N] [--win7] [--support-files N]
                         [--big-wim-mib N [--big-wim-one-resource]] [--arm64] [--ca2023]

Writes every file of the Windows-installer-like tree except the ones built by
external tools (efi/boot/bootx64.efi, efi/microsoft/boot/efisys.bin,
sources/boot.wim, sources/install.wim), and the small source directories the
WIM files are captured from (under WIMSRC_DIR).  All content comes from a
seeded PRNG, so two runs produce identical bytes.

--win7 adds sources/cversion.ini (MinClient=7600.16385) and, in both install
image sources, Windows/Boot/EFI/ files and a few Windows/System32/ files; the
x86 image (install1) gets Windows/Boot/EFI/bootmgfw.efi = "NOT-THE-X64-LOADER"
(make-test-iso puts the GRUB EFI image there in install2).
--big-wim-mib N adds sparse filler files (5 or more, N MiB in total, each a
unique random 64 KiB block followed by zeros) to the install image sources,
alternately to install1 and install2.  No two have the same size (they are
4 KiB apart, the last one takes the rest): wimlib hashes a file whose size
another file shares before it writes it, which reads and hashes it twice
(about twice the capture time of --compress=none).
--big-wim-one-resource makes that filler one file of all N MiB instead
(install1's Windows/System32/DriverStore/filler00.bin), so the WIM holds one
resource of N MiB.
--arm64 leaves out /bootmgr and boot/etfsboot.com (a Windows on ARM disc boots
UEFI only) and names the Arm64 section of autorun.inf.
--ca2023 adds efi/microsoft/boot/fonts/{segoe_slboot,chs_boot}.ttf to the tree
(wgl4_boot.ttf is always there) and Windows/Boot/Fonts_EX/{segoe_slboot_EX,
wgl4_boot_EX,chs_boot_EX}.ttf to the boot2 source (make-test-iso puts the
GRUB images into its Windows/Boot/EFI_EX/).
These options draw from their own PRNGs, so every other file stays the same.

Called by scripts/make-test-iso; not meant to be run on its own.
"""

import os
import random
import sys

MIB = 1024 * 1024

BIOS_MARKER = b"WOESAFE-BIOS-OK"
ELTORITO_MARKER = b"WOESAFE-ISO-BIOS-OK"


def serial_print_program(marker: bytes) -> bytes:
    """Position-independent real-mode x86 code: print marker + CRLF on COM1, halt.

        BA F8 03        mov dx, 0x3f8
        B0 xx / EE      mov al, xx / out dx, al      (per character)
        FA              cli
        F4              hlt          <-+
        EB FD           jmp short -----+
    """
    code = bytearray(b"\xba\xf8\x03")
    for ch in marker + b"\r\n":
        code += bytes([0xB0, ch, 0xEE])
    code += b"\xfa\xf4\xeb\xfd"
    return bytes(code)


def write(root, rel, data: bytes):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def fake_pe(rng, size):
    """Bytes that start like a PE file ("MZ"); content is irrelevant."""
    return b"MZ" + rng.randbytes(size - 2)


def main():
    args = sys.argv[1:]
    big_mib = 0
    if "--big-file-mib" in args:
        i = args.index("--big-file-mib")
        big_mib = int(args[i + 1])
        del args[i : i + 2]
    big_wim_mib = 0
    if "--big-wim-mib" in args:
        i = args.index("--big-wim-mib")
        big_wim_mib = int(args[i + 1])
        del args[i : i + 2]
    support_files = 3000
    if "--support-files" in args:
        i = args.index("--support-files")
        support_files = int(args[i + 1])
        del args[i : i + 2]
    one_resource = "--big-wim-one-resource" in args
    if one_resource:
        args.remove("--big-wim-one-resource")
    win7 = "--win7" in args
    if win7:
        args.remove("--win7")
    arm64 = "--arm64" in args
    if arm64:
        args.remove("--arm64")
    ca2023 = "--ca2023" in args
    if ca2023:
        args.remove("--ca2023")
    if len(args) != 2:
        sys.exit(__doc__)
    tree, wimsrc = args

    rng = random.Random(0x5AFE_15_0)

    # --- top level -------------------------------------------------------
    if not arm64:  # Windows on ARM discs have no BIOS boot manager
        bootmgr = serial_print_program(BIOS_MARKER)
        write(tree, "bootmgr", bootmgr)
    write(tree, "bootmgr.efi", fake_pe(rng, 4096))
    write(tree, "setup.exe", fake_pe(rng, 8192 + 123))
    write(
        tree,
        "autorun.inf",
        (b"[AutoRun.Arm64]" if arm64 else b"[AutoRun.Amd64]")
        + b"\r\nopen=setup.exe\r\nicon=setup.exe,0\r\n\r\n"
        b"[AutoRun]\r\nopen=sources\\SetupError.exe x64\r\n"
        b"icon=sources\\SetupError.exe,0\r\n",
    )
    write(
        tree,
        "README.TXT",
        b'This disc contains a "UDF" file system and requires an operating '
        b'system\r\nthat supports the ISO-13346 "UDF" file system '
        b"specification.\r\n",
    )

    # --- boot/ -----------------------------------------------------------
    write(tree, "boot/bcd", rng.randbytes(16384))
    write(tree, "boot/boot.sdi", rng.randbytes(65536))
    # El Torito no-emulation boot image (loaded at 0x07C0:0000 by the BIOS).
    if not arm64:
        write(tree, "boot/etfsboot.com", serial_print_program(ELTORITO_MARKER).ljust(2048, b"\0"))
    write(tree, "boot/en-us/bootsect.exe.mui", fake_pe(rng, 3000))
    write(tree, "boot/fonts/segmono_boot.ttf", rng.randbytes(5000))

    # --- efi/ (bootx64.efi and efisys.bin are built by make-test-iso) ----
    write(tree, "efi/microsoft/boot/bcd", rng.randbytes(16384))
    write(tree, "efi/microsoft/boot/fonts/wgl4_boot.ttf", rng.randbytes(4000))

    # --- sources/ (boot.wim and install.wim are built by make-test-iso) --
    write(tree, "sources/setup.exe", fake_pe(rng, 20000))
    write(tree, "sources/Program Files/some file.txt", b"a file in a directory with a space\r\n")
    write(tree, "sources/\u00fcn\u00efc\u00f6d\u00e9/\u65e5\u672c\u8a9e \u30d5\u30a1\u30a4\u30eb.txt",
          "non-ASCII name: \u65e5\u672c\u8a9e \u30d5\u30a1\u30a4\u30eb\r\n".encode("utf-8"))
    write(tree, "sources/\u00f1.txt", "\u00f1\r\n".encode("utf-8"))
    write(tree, "sources/longfilename-one.txt", b"one\r\n")
    write(tree, "sources/longfilename-two.txt", b"two\r\n")
    write(tree, "sources/LongFileName-three.TXT", b"three\r\n")
    write(tree, "sources/lowercase.txt", b"lower\r\n")
    write(tree, "sources/UPPERCASE.TXT", b"UPPER\r\n")
    write(tree, "sources/MiXeD.CaSe.Name.Txt", b"mixed\r\n")
    write(tree, "sources/a name with  two  spaces and.dots..txt", b"odd\r\n")
    write(tree, "sources/empty.dat", b"")
    write(tree, "sources/exactly-1mib.bin", rng.randbytes(MIB))
    write(tree, "sources/random-3mib-odd.bin", rng.randbytes(3 * MIB + 12345))
    write(tree, "sources/en-us/setup.exe.mui", fake_pe(rng, 7000))

    # --- support/: 3000 small files in 64 nested directories -------------
    top = ["adprep", "logging", "migwiz", "Tools"]
    mid = ["x86", "AMD64", "arm64"]
    low = ["en-us", "de-de", "ja-jp", "Common Files"]
    dirs = []
    for t in top:
        dirs.append(f"support/{t}")
        for m in mid:
            dirs.append(f"support/{t}/{m}")
            for l in low:
                dirs.append(f"support/{t}/{m}/{l}")
    exts = [".dll", ".mui", ".xml", ".inf", ".cat", ".txt", ".EXE", ".Sys"]
    stems = ["file", "Component", "lib", "RESOURCE", "setupapi", "x"]
    for n in range(support_files):
        d = dirs[n % len(dirs)]
        stem = stems[n % len(stems)]
        ext = exts[(n // 7) % len(exts)]
        name = f"{stem}{n:04d}{ext}"
        size = rng.randint(0, 2048)
        write(tree, f"{d}/{name}", rng.randbytes(size))

    # --- optional big sparse file ----------------------------------------
    if big_mib > 0:
        path = os.path.join(tree, "sources/big.bin")
        size = big_mib * MIB
        with open(path, "wb") as f:
            f.truncate(size)
            # A few random 64 KiB blocks: at the start, around every 1 GiB
            # boundary minus one UDF block (where UDF extents split), in
            # the middle, and at the very end.
            offsets = {0, size // 2, max(0, size - 65536)}
            ext_max = 0x3FFFF800  # largest UDF extent genisoimage writes
            o = ext_max
            while o < size:
                offsets.add(o - 32768)
                o += ext_max
            for off in sorted(offsets):
                off = max(0, min(off, size - 65536)) if size >= 65536 else 0
                f.seek(off)
                f.write(rng.randbytes(min(65536, size - off)))

    # --- WIM capture sources ---------------------------------------------
    def wimdir(name, nfiles, bigsize):
        base = os.path.join(wimsrc, name)
        write(base, "Windows/System32/config/SYSTEM", rng.randbytes(bigsize))
        write(base, "Windows/System32/winload.exe", fake_pe(rng, 5000))
        write(base, "Windows/System32/drivers/etc/hosts", b"127.0.0.1 localhost\r\n")
        write(base, f"Windows/{name}.txt", f"image {name}\r\n".encode())
        for i in range(nfiles):
            write(base, f"Program Files/App{i % 5}/data{i:03d}.bin", rng.randbytes(rng.randint(0, 4096)))

    wimdir("boot1", 20, 60000)
    wimdir("boot2", 30, 120000)
    wimdir("install1", 40, 150000)
    wimdir("install2", 40, 150000)

    # --- Windows 7 shape (own PRNG: the files above stay the same) ---------
    if win7:
        rng7 = random.Random(0x5AFE_0007)
        write(
            tree,
            "sources/cversion.ini",
            b"[HOSTBUILD]\r\nMinClient=7600.16385\r\nMinServer=7600.16385\r\n",
        )
        for name in ("install1", "install2"):
            base = os.path.join(wimsrc, name)
            write(base, "Windows/System32/ntoskrnl.exe", fake_pe(rng7, 9000))
            write(base, "Windows/System32/kernel32.dll", fake_pe(rng7, 6000))
            write(base, "Windows/System32/en-US/winload.exe.mui", fake_pe(rng7, 2500))
            write(base, "Windows/Boot/EFI/memtest.efi", fake_pe(rng7, 3500))
            write(base, "Windows/Boot/EFI/en-US/bootmgfw.efi.mui", fake_pe(rng7, 2000))
            write(base, "Windows/Boot/PCAT/bootmgr", rng7.randbytes(4000))
        # x86 image: a file a test can tell apart from the x64 GRUB loader.
        write(os.path.join(wimsrc, "install1"), "Windows/Boot/EFI/bootmgfw.efi", b"NOT-THE-X64-LOADER")

    # --- Windows UEFI CA 2023 boot files (own PRNG) -------------------------
    # The disc keeps the old fonts; boot.wim's Setup image (2) carries the _EX
    # set next to the CA 2023 signed loaders (Windows/Boot/EFI_EX/, built by
    # make-test-iso).  Content: a TrueType header, then random bytes.
    if ca2023:
        rngc = random.Random(0x5AFE_CA23)
        for name, size in (("segoe_slboot", 4100), ("chs_boot", 6200)):
            write(tree, f"efi/microsoft/boot/fonts/{name}.ttf", b"\0\1\0\0" + rngc.randbytes(size))
        boot2 = os.path.join(wimsrc, "boot2")
        for name, size in (("segoe_slboot", 4300), ("wgl4_boot", 4500), ("chs_boot", 6600)):
            write(boot2, f"Windows/Boot/Fonts_EX/{name}_EX.ttf", b"\0\1\0\0" + rngc.randbytes(size))

    # --- big install.wim filler (own PRNG, sparse) -----------------------
    if big_wim_mib > 0:
        rngw = random.Random(0x5AFE_B16_1)
        total = big_wim_mib * MIB
        count = max(5, -(-big_wim_mib // 512))  # files of at most ~512 MiB
        if one_resource:
            count = 1
        sizes = [total // count - n * 4096 for n in range(count - 1)]
        sizes.append(total - sum(sizes))  # the largest: no two sizes alike
        for n, size in enumerate(sizes):
            image = "install1" if n % 2 == 0 else "install2"
            path = os.path.join(wimsrc, image, f"Windows/System32/DriverStore/filler{n:02d}.bin")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(size)
                f.write(rngw.randbytes(min(65536, size)))


if __name__ == "__main__":
    main()
