#!/usr/bin/env python3
"""Summarise a `cargo bench -p vmstate-benches` run from criterion's JSON output.

Prints markdown tables (median time, throughput, ratio to the group's baseline, target) and,
with --svg FILE, writes a bar chart of the ratios. With --compare NAME, prints before/after
medians against a baseline saved with `-- --save-baseline NAME`.

    python3 benches/report.py [--criterion target/criterion] [--svg benches/results.svg]
"""

import argparse
import json
import os
import sys

# Baseline function of each group kind, and the ratio targets of issue 8.
BASELINE = {
    "encode": "memcpy",
    "decode": "postcard",
    "walk": "memcpy",
    "ram": "memcpy",
    "v4": "no_crc",
}


def baseline(group):
    """The function a group's rows are compared with."""
    if group.startswith("v4_requirements"):
        return "full_load"
    # Groups without a baseline (raw `crc32c` throughput) report medians and GB/s only.
    return BASELINE.get(kind(group))


def load(root, which="new"):
    """{group: {function: (median_ns, throughput_bytes)}} for every benchmark under root."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != which or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        tp = (meta.get("throughput") or {}).get("Bytes")
        out.setdefault(meta["group_id"], {})[meta["function_id"]] = (
            est["median"]["point_estimate"],
            tp,
        )
    return out


def fmt_time(ns):
    if ns < 1e3:
        return f"{ns:.1f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def fmt_tp(ns, nbytes):
    if not nbytes:
        return ""
    gbs = nbytes / ns  # bytes per ns == GB/s
    return f"{gbs:.2f} GB/s" if gbs >= 0.1 else f"{gbs * 1e3:.1f} MB/s"


def kind(group):
    return group.split("_", 1)[0]


def target(group, fn, base_ns, ns):
    """The issue's target for (group, fn) and whether it is met, or ("", None)."""
    k = kind(group)
    if k == "encode" and fn == "vmstate_body":
        return "≤ 1.5x memcpy", ns <= 1.5 * base_ns
    if k == "decode" and fn == "view":
        return "≥ 10x faster than postcard", base_ns / ns >= 10
    if k == "decode" and fn == "vmstate_decode":
        return "≥ 2x faster than postcard", base_ns / ns >= 2
    if k == "walk" and fn in ("footer_scan", "schemas"):
        return "≥ 1 GB/s", None
    if k == "ram" and fn in ("is_zero", "part_encode"):
        return "≥ 50% of memcpy bandwidth", base_ns / ns >= 0.5
    return "", None


def table(data):
    lines = []
    order = ["encode", "decode", "walk", "ram", "v4", "crc32c"]
    for k in order:
        groups = sorted(g for g in data if kind(g) == k)
        if not groups:
            continue
        lines.append(f"\n### {k}\n")
        lines.append(
            "| group | path | median | throughput | time / baseline | baseline / time | target |"
        )
        lines.append("|---|---|---:|---:|---:|---:|---|")
        for g in groups:
            fns = data[g]
            base_fn = baseline(g)
            base = fns.get(base_fn)
            for fn in sorted(fns, key=lambda f: (f != base_fn, f)):
                ns, tp = fns[fn]
                if base:
                    slower, faster = ns / base[0], base[0] / ns
                    t, ok = target(g, fn, base[0], ns)
                    if k == "walk" and t:
                        ok = tp / ns >= 1.0
                else:
                    slower = faster = float("nan")
                    t, ok = "", None
                if k == "encode" and fn == "vmstate_body" and "postcard" in fns:
                    vs = fns["postcard"][0] / ns
                    t += f"; ≥ 5x faster than postcard: {vs:.1f}x" + (" ✅" if vs >= 5 else " ❌")
                mark = "" if ok is None else (" ✅" if ok else " ❌")
                ratios = f"{slower:.2f}x | {faster:.2f}x" if base else "— | —"
                lines.append(
                    f"| {g} | {fn} | {fmt_time(ns)} | {fmt_tp(ns, tp)} | {ratios} | "
                    f"{t.replace(';', mark + ';', 1) if ';' in t else t + mark} |"
                )
    return "\n".join(lines)


def compare(root, name):
    new, old = load(root, "new"), load(root, name)
    lines = [f"| benchmark | {name} | after | after / {name} |", "|---|---:|---:|---:|"]
    for g in sorted(new):
        for fn in sorted(new[g]):
            if g in old and fn in old[g]:
                a, b = old[g][fn][0], new[g][fn][0]
                lines.append(f"| {g}/{fn} | {fmt_time(a)} | {fmt_time(b)} | {b / a:.2f} |")
    return "\n".join(lines)


def svg(data, path):
    """Horizontal bars: how many times faster than the group's baseline each vmstate path is
    (log scale; the 1x line is the baseline)."""
    import math

    rows = []
    charted = [g for g in data if kind(g) in BASELINE]
    for g in sorted(charted, key=lambda g: (list(BASELINE).index(kind(g)), g)):
        base = data[g].get(baseline(g))
        if not base:
            continue
        for fn, (ns, _tp) in sorted(data[g].items()):
            if fn == baseline(g):
                continue
            rows.append((f"{g}/{fn}", base[0] / ns))
    w, left, bar, gap = 900, 260, 14, 4
    h = 40 + len(rows) * (bar + gap) + 30
    lo, hi = -2.0, 3.0  # log10 range: 0.01x .. 1000x
    scale = (w - left - 20) / (hi - lo)

    def x(v):
        return left + (min(max(math.log10(v), lo), hi) - lo) * scale

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="monospace" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="10" y="18" font-size="13">vmstate speed relative to each group\'s baseline '
        "(memcpy: encode/walk/ram; postcard: decode; no_crc / full_load: v4); log, right = faster"
        "</text>",
    ]
    for d in range(int(lo), int(hi) + 1):
        xx = x(10.0**d)
        out.append(f'<line x1="{xx:.1f}" y1="28" x2="{xx:.1f}" y2="{h - 25}" stroke="#ddd"/>')
        out.append(f'<text x="{xx - 10:.1f}" y="{h - 10}">{10.0**d:g}x</text>')
    x1 = x(1.0)
    out.append(f'<line x1="{x1:.1f}" y1="28" x2="{x1:.1f}" y2="{h - 25}" stroke="black"/>')
    for i, (label, r) in enumerate(rows):
        y = 34 + i * (bar + gap)
        xr = x(r)
        color = "#4a90d9" if r >= 1 else "#d9734a"
        out.append(
            f'<rect x="{min(x1, xr):.1f}" y="{y}" width="{abs(xr - x1):.1f}" height="{bar}" '
            f'fill="{color}"/>'
        )
        out.append(f'<text x="5" y="{y + bar - 3}">{label}</text>')
        out.append(f'<text x="{max(x1, xr) + 4:.1f}" y="{y + bar - 3}">{r:.2f}x</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--criterion", default="target/criterion")
    ap.add_argument("--svg")
    ap.add_argument("--compare")
    a = ap.parse_args()
    if not os.path.isdir(a.criterion):
        sys.exit(f"{a.criterion}: no criterion output; run `cargo bench -p vmstate-benches` first")
    if a.compare:
        print(compare(a.criterion, a.compare))
        return
    data = load(a.criterion)
    print(table(data))
    if a.svg:
        svg(data, a.svg)


if __name__ == "__main__":
    main()
