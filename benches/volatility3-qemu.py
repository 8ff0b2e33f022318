#!/usr/bin/env python3
"""volatility3's QEMU layer on the same stream as `benches/benches/guest_ram.rs`, for comparison.

Usage: python3 benches/volatility3-qemu.py STREAM [READS]

Times what `vmstate ram` does in its index pass — volatility3's `QemuSuspendLayer` stacked on
a `FileLayer` over STREAM (its constructor walks the stream and builds its segment map) — and
then READS random 4 KiB reads of guest RAM through the layer, and prints both. volatility3 is
not a dependency of the project: install it into a virtual environment
(`python3 -m venv /tmp/vol3 && /tmp/vol3/bin/pip install volatility3`) and run this script
with that environment's python. Nothing here is part of the test suite.
"""

import os
import random
import sys
import time

from volatility3.framework import contexts
from volatility3.framework.layers import physical, qemu


def main():
    path = os.path.abspath(sys.argv[1])
    reads = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    ctx = contexts.Context()
    ctx.config["file.location"] = "file://" + path
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    ctx.config["qemu.base_layer"] = "file"
    t0 = time.perf_counter()
    layer = qemu.QemuSuspendLayer(ctx, "qemu", "qemu")
    ctx.add_layer(layer)
    built = time.perf_counter() - t0
    top = layer.maximum_address
    rng = random.Random(1)
    t0 = time.perf_counter()
    for _ in range(reads):
        page = rng.randrange(0, min(top, 3 << 30) // 4096)
        layer.read(page * 4096, 4096, pad=True)
    per_read = (time.perf_counter() - t0) / reads
    print("volatility3 QemuSuspendLayer: layer built in %.3f s; %d random 4 KiB reads: "
          "%.1f us each" % (built, reads, per_read * 1e6))


if __name__ == "__main__":
    main()
