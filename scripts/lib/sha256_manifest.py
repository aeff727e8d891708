#!/usr/bin/env python3
"""Write a sha256sum-format manifest of every file under a directory.

Usage: sha256_manifest.py DIR > MANIFEST

Same output as `find DIR -type f -printf '%P\\0' | LC_ALL=C sort -z |
xargs -0 sha256sum` run inside DIR ("HASH  relative/path", byte-sorted), but
hashed with Python's hashlib (OpenSSL, SHA extensions where the CPU has them),
which is several times faster than coreutils' sha256sum on multi-GiB files.
Names with a backslash, CR or LF (which sha256sum would escape) are refused.

Called by scripts/make-test-iso for --big-wim-mib; not meant to be run on its own.
"""

import hashlib
import os
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = os.fsencode(sys.argv[1])
    paths = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                paths.append(os.path.relpath(full, root))
    out = sys.stdout.buffer
    for rel in sorted(paths):
        if any(c in rel for c in (b"\\", b"\n", b"\r")):
            sys.exit(f"sha256_manifest: refusing name sha256sum would escape: {rel!r}")
        h = hashlib.sha256()
        with open(os.path.join(root, rel), "rb") as f:
            while True:
                block = f.read(4 * 1024 * 1024)
                if not block:
                    break
                h.update(block)
        out.write(h.hexdigest().encode() + b"  " + rel + b"\n")


if __name__ == "__main__":
    main()
