#!/usr/bin/env python3
"""Live migrations of a real QEMU guest, direct and through chains of proxies, timed.

The guest: QEMU 7.2, `-M pc`, 512 MiB of RAM from a file of random bytes
(`memory-backend-file,share=off`, so every page is sent as a non-zero PAGE record), TCG,
`-nodefaults`; started, run for a moment (the firmware programs its devices), then migrated
live over loopback TCP to a destination QEMU 7.2 waiting on `-incoming tcp:`. The source's
`max-bandwidth` is raised to 64 GiB/s (QEMU 7.2's default is 128 MiB/s) and the `return-path`
capability is on (so the source completes only once the destination has loaded, and QEMU's own
total time and downtime include what any proxy in the path adds). `downtime-limit` stays at
QEMU's 300 ms. The destination's RAM is allocated before the migration starts
(`prealloc=on`): on the development VM the kernel's zeroing of freshly faulted guest pages
(`clear_page_erms`, perf) took 0.13–1.5 s of the destination's system time per migration, at
random, five times the quantity measured; `--no-prealloc` measures with it.

Each run migrates through one chain (module constant `chains`): `direct` (no proxy), `proxy`
(`vmstate proxy --stats`), `proxy --splice`, `python` (the naive byte forwarder of this file, `forward`), `python --splice` (the same
with the kernel moving the bytes: no copy through it, nothing checked), `forward` (a plain
Rust forwarder, `benches/examples/forward.rs`: 1 MiB reads written whole, nothing checked — what
a copying hop costs at least; when built), and the
v4 pair (`--send-v4` then `--receive-v4`) when the `vmstate` binary has those flags. The runs
interleave the chains (round 1: each chain once, round 2: ...), so the machine's load drifts
over all of them alike. Reported per chain, median (min–max) over the rounds:

* total: the source's `query-migrate` `total-time` (migrate command to completion);
* downtime: its `downtime` (guest stopped to completion, the destination's load and answer on
  the return path included);
* e2e downtime: the destination's MIGRATION `completed` event minus the source's STOP event
  (QMP event timestamps, one host clock);
* held: the proxies' own added downtime, `vmstate proxy --stats` (the final phase's last byte
  read to its last byte written to the next hop), summed over the chain's proxies;
* hops' CPU: user + system CPU time of the chain's processes (`wait4`);
* QEMUs' CPU: user + system CPU time the source and destination QEMU spent from the
  `migrate` command to the destination's completion (`/proc/PID/stat`, 10 ms ticks), and
  `floor`, the least total time two cores allow for all that work: (QEMUs' CPU + hops'
  CPU) / 2 over the same round's direct total (a chain whose work does not fit beside the
  QEMUs' on two cores cannot be faster than this, however little it holds);
* ratio: total time over the same round's direct total.

Usage:
  benches/proxy_migrate.py [--runs 7] [--qemu QEMU] [--vmstate target/release/vmstate]
                           [--mem 512] [--out target/proxy-bench] [--save-stream]
  benches/proxy_migrate.py forward --listen HOST:PORT --to HOST:PORT   # the naive forwarder

`--save-stream` also writes the guest's stream to OUT/pc-7.2-512M.vmstate (a `migrate
exec:cat>FILE` of the same guest), which `VMSTATE_PROXY_STREAM` replays in the `proxy` bench.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def chains(vmstate, qemu_version):
    """The chains of hops between source and destination: each hop is a command that takes
    `--listen ADDR --to ADDR` and prints `... listening on ADDR` on its first stderr line."""
    proxy = [vmstate, "proxy", "--stats", "--qemu", qemu_version]
    found = {
        "direct": [],
        "proxy": [proxy],
        "proxy --splice": [proxy + ["--splice"]],
        "python": [[sys.executable, os.path.abspath(__file__), "forward"]],
        "python --splice": [[sys.executable, os.path.abspath(__file__), "forward", "--splice"]],
    }
    forward = os.path.join(os.path.dirname(vmstate), "examples", "forward")
    if os.path.exists(forward):
        found["forward"] = [[forward]]
    if has_flag(vmstate, "--send-v4") and has_flag(vmstate, "--receive-v4"):
        # The sending side takes no destination options: the receiving side describes the
        # destination (its build's -dump-vmstate for the machine type, `-M pc` of 7.2 here).
        dump = os.path.join(ROOT, "host-tests", "fixtures",
                            "q72-pc-i440fx-7.2.dump-vmstate.json")
        found["v4 pair"] = [
            [vmstate, "proxy", "--stats", "--send-v4"],
            proxy + ["--receive-v4", "--dump", dump],
        ]
    return found


def has_flag(vmstate, flag):
    out = subprocess.run([vmstate, "proxy", "--help"], capture_output=True, text=True)
    return flag in out.stdout


# The naive forwarder: two threads copying bytes, nothing checked. With `splice`, the main
# direction is moved by the kernel instead (socket -> pipe -> socket, `os.splice`): no copy
# through the forwarder and nothing looked at.

def forward_main(listen, to, splice=False):
    host, port = listen.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(1)
    addr = "%s:%d" % srv.getsockname()
    print("python forwarder: listening on %s, destination %s" % (addr, to), file=sys.stderr, flush=True)
    src, _ = srv.accept()
    thost, tport = to.rsplit(":", 1)
    dst = socket.create_connection((thost, int(tport)))

    def copy(a, b):
        while True:
            data = a.recv(1 << 16)
            if not data:
                break
            b.sendall(data)
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def move(a, b):
        r, w = os.pipe()
        while True:
            n = os.splice(a.fileno(), w, 1 << 20)
            if n == 0:
                break
            while n > 0:
                n -= os.splice(r, b.fileno(), n)
        b.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=copy, args=(dst, src), daemon=True)
    back.start()
    (move if splice else copy)(src, dst)
    back.join()


# QMP.

class Qmp:
    """A QMP connection: commands answered in order, events kept with their timestamps."""

    def __init__(self, path, proc):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("QEMU did not open QMP: %s" % path)
                time.sleep(0.02)
        self.file = self.sock.makefile("r")
        self.events = []
        self.cond = threading.Condition()
        self.replies = []
        threading.Thread(target=self._read, daemon=True).start()
        self.execute("qmp_capabilities")

    def _read(self):
        try:
            self._read_lines()
        except OSError:
            # QEMU quit (or died): nothing more comes.
            pass

    def _read_lines(self):
        for line in self.file:
            msg = json.loads(line)
            with self.cond:
                if "event" in msg:
                    self.events.append(msg)
                elif "return" in msg or "error" in msg:
                    self.replies.append(msg)
                self.cond.notify_all()

    def execute(self, cmd, **args):
        self.sock.sendall(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        with self.cond:
            if not self.cond.wait_for(lambda: self.replies, timeout=60):
                raise RuntimeError("no answer to %s" % cmd)
            msg = self.replies.pop(0)
        if "error" in msg:
            raise RuntimeError("%s: %s" % (cmd, msg["error"]))
        return msg["return"]

    def event(self, name, pred=lambda e: True, timeout=120):
        with self.cond:
            found = lambda: [e for e in self.events if e["event"] == name and pred(e)]
            if not self.cond.wait_for(found, timeout=timeout):
                raise RuntimeError("no %s event" % name)
            return found()[0]


def cpu_ms(pid):
    """User + system CPU time of process `pid` so far, its ended threads included, in ms."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the command name.
    return (int(fields[11]) + int(fields[12])) * 1e3 / os.sysconf("SC_CLK_TCK")


def stamp(event):
    t = event["timestamp"]
    return t["seconds"] + t["microseconds"] / 1e6


class Qemu:
    def __init__(self, binary, args, workdir, name):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        qmp = os.path.join(self.dir, "qmp.sock")
        if os.path.exists(qmp):
            os.unlink(qmp)
        self.stderr = open(os.path.join(self.dir, "stderr"), "w")
        self.proc = subprocess.Popen(
            [binary] + args + ["-qmp", "unix:%s,server=on,wait=off" % qmp],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.qmp = Qmp(qmp, self.proc)

    def close(self):
        try:
            self.qmp.execute("quit")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Hop:
    """One process of a chain, listening on a port it chose and printed."""

    def __init__(self, cmd, to):
        self.proc = subprocess.Popen(cmd + ["--listen", "127.0.0.1:0", "--to", to],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        if "listening on " not in line:
            raise RuntimeError("%s: %s%s" % (cmd, line, self.proc.stderr.read()))
        self.addr = line.split("listening on ", 1)[1].split(",", 1)[0].strip()
        self.err = []
        self.reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def finish(self):
        # stderr is the reader thread's; wait4 gives the hop's CPU time.
        out = self.proc.stdout.read()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu = (usage.ru_utime + usage.ru_stime) * 1e3
        self.reader.join()
        if self.proc.returncode != 0:
            raise RuntimeError("hop exited %d: %s%s" % (self.proc.returncode, out, "".join(self.err)))
        held = None
        for line in self.err:
            if "final phase held " in line:
                held = float(line.split("final phase held ", 1)[1].split(" ", 1)[0])
        return held


def guest_args(mem, ram_file, prealloc=False):
    common = ["-display", "none", "-accel", "tcg", "-nodefaults", "-M", "pc", "-m", str(mem)]
    if ram_file is None:
        backend = "memory-backend-ram,id=m0,size=%dM" % mem
        if prealloc:
            backend += ",prealloc=on"
    else:
        backend = "memory-backend-file,id=m0,size=%dM,mem-path=%s,share=off" % (mem, ram_file)
    return common + ["-object", backend, "-machine", "memory-backend=m0"]


def source(args, workdir, ram_file):
    src = Qemu(args.qemu, guest_args(args.mem, ram_file) + ["-S"], workdir, "src")
    src.qmp.execute("migrate-set-capabilities", capabilities=[
        {"capability": "return-path", "state": True},
        {"capability": "events", "state": True}])
    src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 64 << 30})
    # The firmware runs a moment (programs the PIC, PIT, RTC, ...), the guest keeps running.
    src.qmp.execute("cont")
    time.sleep(0.5)
    return src


def one_run(args, workdir, ram_file, hops_cmds):
    """One migration through `hops_cmds`: a dict of measurements."""
    port = free_port()
    dst = Qemu(args.qemu, guest_args(args.mem, None, not args.no_prealloc)
               + ["-S", "-incoming", "tcp:127.0.0.1:%d" % port], workdir, "dst")
    hops = []
    src = None
    try:
        dst.qmp.execute("migrate-set-capabilities", capabilities=[
            {"capability": "return-path", "state": True},
            {"capability": "events", "state": True}])
        to = "127.0.0.1:%d" % port
        for cmd in reversed(hops_cmds):
            hop = Hop(cmd, to)
            hops.insert(0, hop)
            to = hop.addr
        src = source(args, workdir, ram_file)
        qemu_before = cpu_ms(src.proc.pid) + cpu_ms(dst.proc.pid)
        src.qmp.execute("migrate", uri="tcp:" + to)
        done = src.qmp.event("MIGRATION", lambda e: e["data"]["status"] in ("completed", "failed"))
        if done["data"]["status"] != "completed":
            raise RuntimeError("migration failed: %s" % open(os.path.join(src.dir, "stderr")).read())
        # The completed event comes before the source has stored its times.
        info = src.qmp.execute("query-migrate")
        for _ in range(500):
            if info.get("total-time") and "downtime" in info:
                break
            time.sleep(0.01)
            info = src.qmp.execute("query-migrate")
        landed = dst.qmp.event("MIGRATION", lambda e: e["data"]["status"] == "completed")
        qemu_cpu = cpu_ms(src.proc.pid) + cpu_ms(dst.proc.pid) - qemu_before
        stopped = src.qmp.event("STOP")
        held = [h.finish() for h in hops]
        cpu = sum(h.cpu for h in hops) if hops else None
        return {
            "total": info["total-time"],
            "downtime": info["downtime"],
            "e2e": (stamp(landed) - stamp(stopped)) * 1e3,
            "held": sum(h for h in held if h is not None) if any(h is not None for h in held) else None,
            "ram_mbps": info.get("ram", {}).get("mbps"),
            "cpu": cpu,
            "qemu_cpu": qemu_cpu,
        }
    finally:
        for h in hops:
            if h.proc.poll() is None:
                h.proc.kill()
                h.proc.wait()
        if src is not None:
            src.close()
        dst.close()


def save_stream(args, workdir, ram_file, path):
    src = Qemu(args.qemu, guest_args(args.mem, ram_file) + ["-S"], workdir, "save")
    try:
        src.qmp.execute("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
        src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 64 << 30})
        src.qmp.execute("cont")
        time.sleep(0.5)
        src.qmp.execute("migrate", uri="exec:cat > %s" % path)
        done = src.qmp.event("MIGRATION", lambda e: e["data"]["status"] in ("completed", "failed"))
        if done["data"]["status"] != "completed":
            raise RuntimeError("saving the stream failed")
    finally:
        src.close()


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    f = "%.3f" if max(values) < 10 else "%.1f"
    return (f + " (" + f + "–" + f + ")") % (statistics.median(values), min(values), max(values))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "forward":
        p = argparse.ArgumentParser()
        p.add_argument("forward")
        p.add_argument("--listen", required=True)
        p.add_argument("--to", required=True)
        p.add_argument("--splice", action="store_true")
        a = p.parse_args()
        forward_main(a.listen, a.to, a.splice)
        return
    qemu_dir = os.environ.get("VMSTATE_QEMU_DIR", "/work/main/target/qemu")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--qemu", default=os.path.join(qemu_dir, "7.2/bin/qemu-system-x86_64"))
    p.add_argument("--qemu-version", default="7.2", help="the destination build, for --qemu of the proxy")
    p.add_argument("--vmstate", default=os.path.join(ROOT, "target/release/vmstate"))
    p.add_argument("--mem", type=int, default=512, help="guest RAM in MiB")
    p.add_argument("--out", default=os.path.join(ROOT, "target/proxy-bench"))
    p.add_argument("--only", action="append", help="run only these chains")
    p.add_argument("--save-stream", action="store_true")
    p.add_argument("--no-prealloc", action="store_true",
                   help="let the destination QEMU allocate its RAM as pages arrive (see the docstring)")
    p.add_argument("--nice", type=int, default=0,
                   help="run QEMU and the chains at this niceness (negative: ahead of other work)")
    args = p.parse_args()
    if args.nice:
        os.nice(args.nice)
    os.makedirs(args.out, exist_ok=True)
    ram_file = os.path.join(args.out, "ram-%dM.bin" % args.mem)
    if not os.path.exists(ram_file) or os.path.getsize(ram_file) != args.mem << 20:
        with open(ram_file + ".tmp", "wb") as f:
            for _ in range(args.mem):
                f.write(os.urandom(1 << 20))
        os.rename(ram_file + ".tmp", ram_file)
    workdir = tempfile.mkdtemp(prefix="vmstate-proxy-bench-")
    todo = chains(args.vmstate, args.qemu_version)
    if args.only:
        todo = {k: v for k, v in todo.items() if k in args.only or k == "direct"}
    results = {name: [] for name in todo}
    try:
        if args.save_stream:
            path = os.path.join(args.out, "pc-7.2-%dM.vmstate" % args.mem)
            save_stream(args, workdir, ram_file, path)
            print("stream saved: %s (%d bytes)" % (path, os.path.getsize(path)), flush=True)
        for r in range(args.runs):
            for name, hops in todo.items():
                m = one_run(args, workdir, ram_file, hops)
                results[name].append(m)
                print("round %d %-8s total %5d ms, downtime %4d ms, e2e downtime %6.1f ms, held %s ms, "
                      "hops' CPU %s ms, QEMUs' CPU %.0f ms, load %s"
                      % (r + 1, name, m["total"], m["downtime"], m["e2e"],
                         "—" if m["held"] is None else "%.3f" % m["held"],
                         "—" if m["cpu"] is None else "%.0f" % m["cpu"], m["qemu_cpu"],
                         " ".join(open("/proc/loadavg").read().split()[:3])), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if args.runs == 0:
        return
    direct = [m["total"] for m in results["direct"]]
    print()
    print("| chain | total ms | downtime ms | e2e downtime ms | proxy held ms | hops' CPU ms "
          "| QEMUs' CPU ms | total / direct (same round) | floor on 2 cores |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, ms in results.items():
        ratios = [m["total"] / d for m, d in zip(ms, direct)]
        floors = [((m["cpu"] or 0) + m["qemu_cpu"]) / 2 / d for m, d in zip(ms, direct)]
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, spread([m["total"] for m in ms]), spread([m["downtime"] for m in ms]),
            spread([m["e2e"] for m in ms]), spread([m["held"] for m in ms]),
            spread([m.get("cpu") for m in ms]), spread([m["qemu_cpu"] for m in ms]),
            "%.3fx (%.2f–%.2f)" % (statistics.median(ratios), min(ratios), max(ratios)),
            "%.3fx" % statistics.median(floors)))


if __name__ == "__main__":
    main()
