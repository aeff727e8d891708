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


def cmd_report(argv):
    d = argv[0]
    order = ["big-file", "split-wim", "esd", "tree", "ntfs"]
    metas = {os.path.basename(p)[:-5]: read_meta(p) for p in glob.glob(os.path.join(d, "*.meta"))}
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


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "report"):
        sys.exit(__doc__)
    if sys.argv[1] == "run":
        cmd_run(sys.argv[2:])
    else:
        cmd_report(sys.argv[2:])


if __name__ == "__main__":
    main()
