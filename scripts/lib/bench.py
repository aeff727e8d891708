#!/usr/bin/env python3
"""Helpers for scripts/bench (not meant to be run by hand).

bench.py run --json OUT.json [--label TEXT] -- COMMAND...
    Runs COMMAND with stdin from /dev/null and stdout + stderr through one pipe. Writes OUT.json with:
      wall_s        seconds from spawn to exit (monotonic clock)
      load1         the 1-minute load average just before (other work on the machine skews the times)
      rc            exit status (negative: killed by that signal)
      lines         [[seconds since spawn, line], ...] as the lines arrived
      ru_maxrss_kib what `/usr/bin/time -v` prints as "Maximum resident set size" for the command (it runs under
                    /usr/bin/time): wait4()'s ru_maxrss, the largest peak RSS among the command and the
                    descendants that were waited for (a child's peak is folded into its parent's when the parent
                    reaps it)
      procs         every process of the command's tree seen while polling /proc every 50 ms: pid, ppid, name,
                    NSpid, role (supervisor = the command itself, worker = PID 1 of a PID namespace below it,
                    helper = anything else) and the largest VmHWM seen (kiB; VmHWM starts again at an exec)
    When COMMAND fails, its output goes to stderr and bench.py exits with its status.

bench.py report RESULTS_DIR
    Prints the Markdown table of scripts/bench from the files bench.sh left in RESULTS_DIR:
      CASE.meta                 key=value lines (baseline, woesafe_cmd, baseline_cmd, note, runs)
      CASE.woesafe.N.json       from `bench.py run`
      CASE.baseline.N.s         the baseline's seconds
      rss.CASE.json             an untimed `bench.py run` for the rss case (when big-file / split-wim did not run)
    and, for a multi case (its meta says kind=multi), a table of its own from
      CASE.w1.N.json, CASE.wN.N.json   woesafe to 1 target and to `targets` targets at once (`bench.py run`)
      CASE.d1.N.s, CASE.dN.N.s         dd to 1 image and `targets` dd's at once: seconds
      CASE.x1.N.s, CASE.xN.N.s         the same with oflag=direct (no page cache: the disk's own speed)
      CASE.KIND.N.io                   two `snap` lines (before, after the run): time, the disk's sectors read
                                       and written, CPU ticks user nice system idle iowait irq softirq
"""

import glob
import json
import os
import re
import signal
import statistics
import sys
import threading
import time

POLL_S = 0.05
STEP = re.compile(r"^\[(\d+)/(\d+)\] (.*)$")
PROGRESS = re.compile(r"^\s+(\d+)%")
# The step in which woesafe splits or re-packs install.wim/install.esd ("Preparing files in scratch space ...").
PREPARE = re.compile(r"prepar|re-?pack|split", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------- run


def read_stat(pid):
    """(ppid, comm) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lp, rp = data.find("("), data.rfind(")")
    fields = data[rp + 2:].split()
    return int(fields[1]), data[lp + 1:rp]


def read_status(pid):
    """{'Name', 'VmHWM' (kiB), 'NSpid'} of a process, or None when it is gone (or a zombie: no VmHWM)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for raw in f:
                key, _, val = raw.decode("utf-8", "replace").partition(":")
                if key in ("Name", "NSpid"):
                    out[key] = val.strip()
                elif key == "VmHWM":
                    out[key] = int(val.split()[0])
    except OSError:
        return None
    return out if "VmHWM" in out else None


class TreePoller(threading.Thread):
    """Follows the process tree below one pid through /proc and keeps each process's largest VmHWM."""

    def __init__(self, root, timed):
        super().__init__(daemon=True)
        self.root = root
        self.timed = timed  # root is /usr/bin/time, its child the command
        self.tree = {root}
        self.known = set()
        self.procs = {}  # pid -> dict
        self.stop = threading.Event()

    def tick(self):
        new = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                pid = int(name)
                if pid not in self.known:
                    new.append(pid)
        # Parents are usually older (smaller pid) than their children: look at new pids in that order, and again
        # while the tree grows (a child seen before its parent joined the tree).
        pending = sorted(new)
        stats = {}
        for pid in pending:
            st = read_stat(pid)
            if st is not None:
                stats[pid] = st
        self.known.update(pending)
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _) in stats.items():
                if pid not in self.tree and ppid in self.tree:
                    self.tree.add(pid)
                    grew = True
        for pid in list(self.tree):
            st = read_status(pid)
            if st is None:
                continue
            rec = self.procs.setdefault(pid, {"pid": pid, "ppid": stats.get(pid, (None,))[0], "hwm_kib": 0})
            rec["nspid"] = st.get("NSpid", "")
            name = st.get("Name", "?")
            if rec.get("name") != name:
                # An exec (the name changes with it) starts VmHWM again: keep the peak of the last program only,
                # not that of the forked parent it started as.
                rec["name"] = name
                rec["hwm_kib"] = 0
            rec["hwm_kib"] = max(rec["hwm_kib"], st["VmHWM"])

    def run(self):
        while not self.stop.is_set():
            self.tick()
            self.stop.wait(POLL_S)

    def result(self):
        out = []
        for pid, rec in sorted(self.procs.items()):
            ns = rec.get("nspid", "").split()
            if pid == self.root and self.timed:
                continue  # /usr/bin/time
            elif pid == self.root or (self.timed and rec.get("ppid") == self.root):
                role = "supervisor"
            elif len(ns) > 1 and ns[-1] == "1":
                role = "worker"
            else:
                role = "helper"
            out.append(dict(rec, role=role))
        return out


def cmd_run(argv):
    out_json, label = None, None
    while argv and argv[0] != "--":
        if argv[0] == "--json":
            out_json = argv[1]
            argv = argv[2:]
        elif argv[0] == "--label":
            label = argv[1]
            argv = argv[2:]
        else:
            sys.exit(f"bench.py run: unknown option {argv[0]}")
    cmd = argv[1:]
    if not out_json or not cmd:
        sys.exit("usage: bench.py run --json OUT.json [--label TEXT] -- COMMAND...")
    # The command runs under /usr/bin/time, whose own small fork becomes the command: a child forked from this
    # Python process would carry Python's peak RSS into ru_maxrss (exec keeps the old peak in the process's
    # maximum), and /usr/bin/time -v's number is the one to compare with anyway.
    maxrss_file = out_json + ".maxrss"
    timed = os.access("/usr/bin/time", os.X_OK)
    if timed:
        cmd = ["/usr/bin/time", "-f", "%M", "-o", maxrss_file, "--"] + cmd
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    rfd, wfd = os.pipe()
    lines = []
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the command
        try:
            os.close(rfd)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(wfd, 1)
            os.dup2(wfd, 2)
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    os.close(wfd)
    poller = TreePoller(pid, timed)
    stopped = []

    def note(signum, _frame):
        # Ctrl-C (or a kill of the process group) reaches woesafe too, which stops in order: wait for it, so that
        # the caller cleans up after it, not under it. (Not passed on: a second SIGINT makes woesafe stop at once.)
        stopped.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, note)
    poller.tick()
    poller.start()

    def reader():
        with os.fdopen(rfd, "rb") as f:
            for raw in f:
                lines.append([round(time.monotonic() - t0, 4), raw.decode("utf-8", "replace").rstrip("\n")])

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.monotonic() - t0
    poller.stop.set()
    poller.join()
    rt.join(timeout=5)
    rc = os.waitstatus_to_exitcode(status)
    try:
        with open(maxrss_file) as f:
            # "Command exited with non-zero status N" may come first; the number is the last line.
            time_maxrss = int(f.read().split()[-1])
        os.unlink(maxrss_file)
    except (OSError, ValueError, IndexError):
        time_maxrss = None
    res = {
        "label": label,
        "cmd": cmd[6:] if timed else cmd,
        "rc": rc,
        "wall_s": round(wall, 4),
        "load1": load,
        "ru_maxrss_kib": time_maxrss,
        "procs": poller.result(),
        "lines": lines,
    }
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)
    if stopped:
        sys.stderr.write(f"bench: {label or cmd[0]}: stopped by signal {stopped[0]} (exit status {rc})\n")
        sys.exit(128 + stopped[0])
    if rc != 0:
        sys.stderr.write(f"bench: {label or cmd[0]}: exit status {rc}; its output:\n")
        for _, text in lines:
            sys.stderr.write(f"  | {text}\n")
        sys.exit(rc if 0 < rc < 256 else 1)


# ---------------------------------------------------------------------------------------------------- report


def analyse(res):
    """Facts from one woesafe run's timestamped output."""
    lines = res["lines"]
    steps = [(t, m.group(3)) for t, text in lines if (m := STEP.match(text))]
    prepare = None
    for i, (t, text) in enumerate(steps):
        if PREPARE.search(text):
            end = steps[i + 1][0] if i + 1 < len(steps) else res["wall_s"]
            prepare = (prepare or 0.0) + (end - t)
    progress = [t for t, text in lines if PROGRESS.match(text)]
    tail = res["wall_s"] - progress[-1] if progress else None
    layout = next((text.strip() for _, text in lines if text.startswith("Filesystem:")), None)
    return {"prepare_s": prepare, "tail_s": tail, "layout": layout, "steps": len(steps)}


def median(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def mib(kib):
    return f"{kib / 1024:.1f}"


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def rss_summary(results):
    """'supervisor X, worker Y, ...' from the runs of one case (largest over the runs)."""
    peak = {}
    ru = None
    for res in results:
        if res["ru_maxrss_kib"] is not None:
            ru = max(ru or 0, res["ru_maxrss_kib"])
        for p in res["procs"]:
            key = p["role"] if p["role"] != "helper" else f"helper {p.get('name', '?')}"
            peak[key] = max(peak.get(key, 0), p["hwm_kib"])
    parts = []
    for key in ("supervisor", "worker"):
        parts.append(f"{key} {mib(peak.pop(key))} MiB" if key in peak else f"{key} not seen")
    helpers = sorted(peak.items(), key=lambda kv: -kv[1])
    if helpers:
        parts.append("largest helpers " + ", ".join(f"{k[7:]} {mib(v)} MiB" for k, v in helpers[:3]))
    parts.append("/usr/bin/time -v's maximum resident set size (wait4 ru_maxrss) "
                 + (f"{mib(ru)} MiB" if ru is not None else "not measured (no /usr/bin/time)"))
    return "; ".join(parts)


def runs_of(d, case, kind, ext):
    """The files CASE.KIND.N.EXT in run order."""
    return sorted(glob.glob(os.path.join(d, f"{case}.{kind}.*.{ext}")), key=lambda p: int(p.rsplit(".", 2)[1]))


def read_io(path, clk_tck):
    """A run's disk and CPU use from its two snap lines: {read_b, written_b, busy, user, system, iowait} (CPU
    shares of all cores' time, 0..1; the disk's bytes None without a disk)."""
    with open(path) as f:
        a, b = [line.split() for line in f.read().splitlines()[:2]]
    out = {}
    if a[1] != "-" and b[1] != "-":
        out["read_b"] = (int(b[1]) - int(a[1])) * 512
        out["written_b"] = (int(b[2]) - int(a[2])) * 512
    else:
        out["read_b"] = out["written_b"] = None
    cpu = [int(y) - int(x) for x, y in zip(a[3:10], b[3:10])]
    user, nice, system, idle, iowait, irq, softirq = cpu
    total = sum(cpu) or 1
    out["user"] = (user + nice) / total
    out["system"] = (system + irq + softirq) / total
    out["busy"] = out["user"] + out["system"]
    out["iowait"] = iowait / total
    out["cpu_s"] = (user + nice + system + irq + softirq) / clk_tck
    return out


TARGET_LINE = re.compile(r"^(.*?\.img): (.*)$")


def target_phases(res):
    """Per target of one woesafe run: (seconds to the copy step, the copy step's seconds, seconds from its end to
    'Done:'), from the timestamped lines (several targets prefix theirs with the target's path)."""
    per = {}
    for t, text in res["lines"]:
        m = TARGET_LINE.match(text)
        key, body = (m.group(1), m.group(2)) if m else ("", text)
        per.setdefault(key, []).append((t, body))
    out = []
    for lines in per.values():
        steps = [(t, mm.group(3)) for t, body in lines if (mm := STEP.match(body))]
        done = next((t for t, body in lines if body.startswith("Done:")), None)
        copy = next((i for i, (_, text) in enumerate(steps) if text.startswith("Copying")), None)
        if copy is None or done is None:
            continue
        start = steps[copy][0]
        end = steps[copy + 1][0] if copy + 1 < len(steps) else done
        out.append((start, end - start, done - end, done))
    return out


def gib_s(b):
    return "–" if b is None else f"{b / 1073741824:.2f} GiB"


def multi_report(d, cases, metas):
    """The multi cases' table (woesafe and dd, 1 target and N at once) and what each kind of run did."""
    n = {metas[c].get("targets", "N") for c in cases}
    n = n.pop() if len(n) == 1 else "N"
    print(f"| case | woesafe 1 target (s) | woesafe {n} at once (s) | ratio {n}/1 | dd 1 image (s) "
          f"| {n} dd's at once (s) | dd ratio {n}/1 | dd direct 1 (s) | dd direct {n} (s) | dd direct ratio {n}/1 "
          f"| woesafe {n} / dd direct {n} | woesafe runs 1; {n} (s) | dd runs 1; {n} (s) | dd direct runs 1; {n} (s) "
          f"| notes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |")
    details = []
    for case in cases:
        meta = metas[case]
        clk = int(meta.get("clk_tck", "100"))
        ws = {}
        for k in ("w1", "wN"):
            ws[k] = []
            for p in runs_of(d, case, k, "json"):
                with open(p) as f:
                    ws[k].append(json.load(f))
        ts = {k: [r["wall_s"] for r in ws[k]] for k in ws}
        for k in ("d1", "dN", "x1", "xN"):
            ts[k] = []
            for p in runs_of(d, case, k, "s"):
                with open(p) as f:
                    ts[k].append(float(f.read().strip()))
        med = {k: median(v) for k, v in ts.items()}

        def ratio(a, b):
            return f"{med[a] / med[b]:.2f}" if med.get(a) is not None and med.get(b) else "–"

        def runs(a, b):
            return f"{', '.join(fmt(x) for x in ts[a])}; {', '.join(fmt(x) for x in ts[b])}"

        notes = []
        phases = {k: [target_phases(r) for r in ws[k]] for k in ws}
        spreads = [max(p[3] for p in ph) - min(p[3] for p in ph) for ph in phases["wN"] if len(ph) > 1]
        if spreads:
            notes.append(f"the {n} targets end within {fmt(median(spreads))} s of each other (median)")
        loads = [r["load1"] for k in ws for r in ws[k] if "load1" in r]
        if loads:
            notes.append(f"load average {min(loads):.1f}–{max(loads):.1f} at the starts")
        print(f"| {case} | {fmt(med['w1'])} | {fmt(med['wN'])} | {ratio('wN', 'w1')} | {fmt(med['d1'])} "
              f"| {fmt(med['dN'])} | {ratio('dN', 'd1')} | {fmt(med['x1'])} | {fmt(med['xN'])} "
              f"| {ratio('xN', 'x1')} | {ratio('wN', 'xN')} | {runs('w1', 'wN')} "
              f"| {runs('d1', 'dN')} | {runs('x1', 'xN')} | {'; '.join(notes)} |")
        iso_b = int(meta["iso_bytes"]) if meta.get("iso_bytes") else None
        for k, label in (("w1", "woesafe, 1 target"), ("wN", f"woesafe, {n} targets"), ("d1", "dd, 1 image"),
                         ("dN", f"dd, {n} at once"), ("x1", "dd oflag=direct, 1 image"),
                         ("xN", f"dd oflag=direct, {n} at once")):
            ios = [read_io(p, clk) for p in runs_of(d, case, k, "io")]
            if not ios:
                continue

            def m(key):
                xs = [io[key] for io in ios if io[key] is not None]
                return median(xs) if xs else None

            text = []
            if meta.get("disk"):
                rd, wr = m("read_b"), m("written_b")
                x = f" = {rd / iso_b:.2f}× the ISO" if rd is not None and iso_b else ""
                text.append(f"{meta['disk']} read {gib_s(rd)}{x}, written {gib_s(wr)}")
                if wr is not None and med[k]:
                    text.append(f"{wr / med[k] / 1048576:.0f} MiB/s written over the run")
            text.append(f"CPU ({meta.get('cpus', '?')} cores) {m('busy') * 100:.0f} % busy (user "
                        f"{m('user') * 100:.0f} %, system {m('system') * 100:.0f} %), iowait {m('iowait') * 100:.0f} %")
            if k in phases:
                ph = [p for run in phases[k] for p in run]
                if ph:
                    text.append(f"per target: copy step starts at {fmt(median([p[0] for p in ph]))} s, takes "
                                f"{fmt(median([p[1] for p in ph]))} s, then {fmt(median([p[2] for p in ph]))} s to "
                                f"Done")
            if k == "wN" and ws[k]:
                text.append("peak RSS " + rss_summary(ws[k]).split("; /usr/bin/time")[0])
            details.append(f"- {case}, {label} (medians of {len(ios)} runs): {'; '.join(text)}")
    if details:
        print()
        print("What the runs did (the disk holding the images and the ISO, from /proc/diskstats, and all CPUs, from "
              "/proc/stat: machine-wide, so other work counts too; per-target steps from woesafe's timestamped lines):")
        for line in details:
            print(line)


def cmd_report(argv):
    d = argv[0]
    order = ["big-file", "split-wim", "esd", "tree", "ntfs"]
    metas = {os.path.basename(p)[:-5]: read_meta(p) for p in glob.glob(os.path.join(d, "*.meta"))}
    multi = sorted((c for c in metas if metas[c].get("kind") == "multi"), key=lambda c: (c != "multi-big-file", c))
    metas_all, metas = metas, {c: m for c, m in metas.items() if c not in multi}
    cases = [c for c in order if c in metas] + sorted(c for c in metas if c not in order)
    if cases:
        print("| case | woesafe median (s) | baseline | baseline median (s) | ratio | woesafe runs (s) "
              "| baseline runs (s) | notes |")
        print("| --- | ---: | --- | ---: | ---: | --- | --- | --- |")
    rss_lines = []
    for case in cases:
        meta = metas[case]
        if meta.get("skipped"):
            print(f"| {case} | – | {meta.get('baseline', '')} | – | – | – | – | skipped: {meta['skipped']} |")
            continue
        wres = []
        for p in sorted(glob.glob(os.path.join(d, f"{case}.woesafe.*.json")),
                        key=lambda p: int(p.rsplit(".", 2)[1])):
            with open(p) as f:
                wres.append(json.load(f))
        bts = []
        for p in sorted(glob.glob(os.path.join(d, f"{case}.baseline.*.s")), key=lambda p: int(p.rsplit(".", 2)[1])):
            with open(p) as f:
                bts.append(float(f.read().strip()))
        wts = [r["wall_s"] for r in wres]
        wm, bm = median(wts), median(bts)
        ratio = f"{wm / bm:.2f}" if wm is not None and bm else "–"
        facts = [analyse(r) for r in wres]
        notes = []
        layouts = sorted({f["layout"] for f in facts if f["layout"]})
        if layouts:
            notes.append("; ".join(layouts).replace("|", "\\|"))
        preps = [f["prepare_s"] for f in facts if f["prepare_s"] is not None]
        label = meta.get("prepare_label", "prepare")
        if preps:
            notes.append(f"{label}: median {fmt(median(preps))} s ({', '.join(fmt(x) for x in preps)})")
        elif meta.get("prepare_label"):
            notes.append(f"{label}: no Preparing step printed")
        tails = [f["tail_s"] for f in facts if f["tail_s"] is not None]
        if tails:
            notes.append(f"last progress line → exit median {fmt(median(tails))} s")
        loads = [r["load1"] for r in wres if "load1" in r]
        if loads:
            notes.append(f"load average {min(loads):.1f}–{max(loads):.1f} at the starts")
        if meta.get("note"):
            notes.append(meta["note"])
        print(f"| {case} | {fmt(wm)} | {meta.get('baseline', '')} | {fmt(bm)} | {ratio} | "
              f"{', '.join(fmt(x) for x in wts)} | {', '.join(fmt(x) for x in bts)} | {'; '.join(notes)} |")
        if wres:
            rss_lines.append((case, rss_summary(wres), len(wres)))
    for p in sorted(glob.glob(os.path.join(d, "rss.*.json"))):
        case = os.path.basename(p)[4:-5]
        if case not in [c for c, _, _ in rss_lines]:
            with open(p) as f:
                rss_lines.append((case + ", untimed", rss_summary([json.load(f)]), 1))
    if rss_lines:
        print()
        print("Peak RSS (VmHWM of each woesafe process, /proc polled every 50 ms; largest over the runs):")
        rank = {c: i for i, c in enumerate(order)}
        rss_lines.sort(key=lambda x: rank.get(x[0].split(",")[0], len(order)))
        for case, text, n in rss_lines:
            print(f"- {case} ({n} run{'s' if n != 1 else ''}): {text}")
    if multi:
        if cases or rss_lines:
            print()
        multi_report(d, multi, metas_all)


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "report"):
        sys.exit(__doc__)
    if sys.argv[1] == "run":
        cmd_run(sys.argv[2:])
    else:
        cmd_report(sys.argv[2:])


if __name__ == "__main__":
    main()
