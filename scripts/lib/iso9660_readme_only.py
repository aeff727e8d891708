#!/usr/bin/env python3
"""Prune the ISO9660 and Joliet trees of an ISO down to /README.TXT, in place.

Usage: iso9660_readme_only.py IMAGE.iso

Microsoft's Windows ISOs are "UDF bridge" discs whose ISO9660 tree holds only
README.TXT; the real content is only reachable through UDF.  genisoimage
cannot build that: its -hide/-hide-joliet options also drop the files from the
UDF tree.  So make-test-iso builds the ISO with everything in all trees and
then this script rewrites, for the primary and each supplementary (Joliet)
volume descriptor:
  * the root directory extent: ".", ".." and the README.TXT record only,
    1 sector long (records of the UDF tree and all file data are untouched;
    the orphaned ISO9660/Joliet sub-directory extents are zeroed);
  * the L and M path tables: just the root entry.
"""

import struct
import sys

SECTOR = 2048


def both32(value):
    return struct.pack("<I", value) + struct.pack(">I", value)


def dir_records(data):
    """Yield (offset, record bytes) for each directory record in a dir extent."""
    off = 0
    while off < len(data):
        n = data[off]
        if n == 0:
            # Records do not span sectors: skip to the next one.
            off = (off // SECTOR + 1) * SECTOR
            continue
        yield off, data[off : off + n]
        off += n


def record_name(rec, joliet):
    raw = rec[33 : 33 + rec[32]]
    if raw in (b"\0", b"\1"):
        return raw
    name = raw.decode("utf-16-be" if joliet else "latin-1")
    return name.split(";")[0]


def prune(f, vd_sector, vd, joliet):
    root = vd[156 : 156 + 34]
    root_lba = struct.unpack_from("<I", root, 2)[0]
    root_len = struct.unpack_from("<I", root, 10)[0]
    f.seek(root_lba * SECTOR)
    data = f.read(root_len)

    keep = []
    subdirs = []
    for _, rec in dir_records(data):
        name = record_name(rec, joliet)
        if name in (b"\0", b"\1"):
            rec = bytearray(rec)
            rec[10:18] = both32(SECTOR)  # "." and ".." of root = root
            keep.append(bytes(rec))
        elif name == "README.TXT":
            keep.append(rec)
        elif rec[25] & 2:
            subdirs.append(rec)
    if len(keep) != 3:
        sys.exit(f"iso9660_readme_only: no README.TXT in root of descriptor at sector {vd_sector}")
    new_root = b"".join(keep)
    assert len(new_root) <= SECTOR

    # Zero orphaned sub-directory extents (recursively) so no stale tree remains.
    def zero_dir(rec):
        lba = struct.unpack_from("<I", rec, 2)[0]
        length = struct.unpack_from("<I", rec, 10)[0]
        f.seek(lba * SECTOR)
        sub = f.read(length)
        for _, r in dir_records(sub):
            if record_name(r, joliet) not in (b"\0", b"\1") and r[25] & 2:
                zero_dir(r)
        f.seek(lba * SECTOR)
        f.write(b"\0" * length)

    for rec in subdirs:
        zero_dir(rec)

    f.seek(root_lba * SECTOR)
    f.write(new_root.ljust(max(root_len, SECTOR), b"\0"))

    # Path tables: only the root directory (id 0x00, parent 1).
    pt_size = struct.unpack_from("<I", vd, 132)[0]
    pt_l = [struct.unpack_from("<I", vd, 140)[0], struct.unpack_from("<I", vd, 144)[0]]
    pt_m = [struct.unpack_from(">I", vd, 148)[0], struct.unpack_from(">I", vd, 152)[0]]
    entry_l = bytes([1, 0]) + struct.pack("<IH", root_lba, 1) + b"\0\0"
    entry_m = bytes([1, 0]) + struct.pack(">IH", root_lba, 1) + b"\0\0"
    for lbas, entry in ((pt_l, entry_l), (pt_m, entry_m)):
        for lba in lbas:
            if lba:
                f.seek(lba * SECTOR)
                f.write(entry.ljust(pt_size, b"\0"))

    vd = bytearray(vd)
    vd[132:140] = both32(len(entry_l))
    vd[156 + 10 : 156 + 18] = both32(SECTOR)
    f.seek(vd_sector * SECTOR)
    f.write(vd)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], "r+b") as f:
        sector = 16
        done = 0
        while True:
            f.seek(sector * SECTOR)
            vd = f.read(SECTOR)
            if len(vd) < SECTOR or vd[1:6] != b"CD001" or vd[0] == 255:
                break
            if vd[0] == 1:
                prune(f, sector, vd, joliet=False)
                done += 1
            elif vd[0] == 2 and vd[88:90] == b"%/" and vd[90:91] in (b"@", b"C", b"E"):
                prune(f, sector, vd, joliet=True)
                done += 1
            sector += 1
    if not done:
        sys.exit("iso9660_readme_only: no ISO9660 volume descriptor found")


if __name__ == "__main__":
    main()
