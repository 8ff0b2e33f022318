#!/usr/bin/env python3
"""Runs QEMU's scripts/analyze-migration.py on a stream that starts at file offset OFFSET of
FILE (a libvirt save image, a `migrate file:PATH,offset=N` stream), as that script would read
such a file if it started there: it opens FILE, moves to OFFSET, and reads on; every other seek
(the trailer found from the end, mapped-ram's pages regions) is in file offsets, as QEMU's own
`file:` channel has them.

    analyze-at-offset.py SCRIPT FILE OFFSET state|desc

The script is QEMU 10.0.2's, patched here in memory (nothing of it is copied) with upstream's
mapped-ram block parsing (qemu.git 0002b0db1377, "analyze-migration.py: fix mapped-ram
parsing", not in a release): when the configuration lists `mapped-ram`, the 28-byte header
after each block entry is read and the file position moves to `pages_offset + length`. The
same patch made the committed NAME.state.json of the mapped-ram fixtures (see
host-tests/fixtures/README.md), which host-tests/tests/containers.rs checks first.
"""
import sys


def patched(src):
    def sub(old, new):
        nonlocal src
        if src.count(old) != 1:
            raise SystemExit("analyze-at-offset: the script does not contain %r once" % old)
        src = src.replace(old, new)

    sub("        self.ignore_shared = ramargs['ignore_shared']\n",
        "        self.ignore_shared = ramargs['ignore_shared']\n"
        "        self.mapped_ram = ramargs.get('mapped_ram', False)\n")
    sub("                    if self.ignore_shared:\n"
        "                        mr_addr = self.file.read64()\n",
        "                    if self.ignore_shared:\n"
        "                        mr_addr = self.file.read64()\n"
        "                    if self.mapped_ram:\n"
        "                        self.file.read32()\n"
        "                        self.file.read64()\n"
        "                        self.file.read64()\n"
        "                        pages_offset = self.file.read64()\n"
        "                        self.file.seek(pages_offset + len, os.SEEK_SET)\n")
    sub("                ramargs['ignore_shared'] = section.has_capability('x-ignore-shared')\n",
        "                ramargs['ignore_shared'] = section.has_capability('x-ignore-shared')\n"
        "                ramargs['mapped_ram'] = section.has_capability('mapped-ram')\n")
    sub("        file = MigrationFile(self.filename)\n",
        "        file = MigrationFile(self.filename)\n"
        "        file.seek(ANALYZE_OFFSET, os.SEEK_SET)\n")
    return src


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("state", "desc"):
        raise SystemExit(__doc__)
    script, path, offset, mode = sys.argv[1:]
    with open(script) as f:
        src = patched(f.read())
    sys.argv = [script, "-f", path, "-d", mode]
    code = compile(src, script, "exec")
    exec(code, {"__name__": "__main__", "ANALYZE_OFFSET": int(offset, 0)})


main()
