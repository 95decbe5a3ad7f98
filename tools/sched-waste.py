#!/usr/bin/env python3
"""Idle time that a waiting thread could have used, from a `perf sched record` file.

Usage:
    tools/sched-waste.py sched.data
    tools/sched-waste.py --text events.txt    (the output of `perf sched script`)

Replays the scheduler events of the recording (`sched_waking`,
`sched_migrate_task`, `sched_switch`) and keeps, for every CPU, the thread it runs
and the threads queued on it. For each CPU it prints how much of the recording it
sat idle, and how much of that idle time another CPU had a thread queued: time a
runnable thread waited while a CPU was free. The last table splits that wasted
time by the thread that waited, the thread that had woken it, and the thread
running ahead of it. Threads named `actix-rt*` or `tokio-rt*` are counted as
`worker`.

BENCHMARKS.md ("Where the CPU goes now") has what it showed for `otpd-httpbench`
and the command that records the file.
"""

import collections
import re
import subprocess
import sys

EVENT = re.compile(r"\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)")
FIELD = re.compile(r"(\w+)=(\S+)")


def label(comm):
    if comm.startswith(("actix-rt", "tokio-rt")):
        return "worker"
    return comm


def main(args):
    if len(args) == 2 and args[0] == "--text":
        path = args[1]
        with open(path, encoding="utf-8") as f:
            script = f.read()
    elif len(args) == 1 and not args[0].startswith("-"):
        path = args[0]
        script = subprocess.run(
            ["perf", "sched", "script", "-i", path], capture_output=True, text=True, check=True
        ).stdout
    else:
        sys.exit(__doc__)
    running = {}  # cpu -> pid it runs (0: idle)
    where = {}  # pid -> cpu it is on, or queued on
    runnable = set()
    comm = {0: "idle"}
    woken_by = {}
    idle = collections.Counter()
    wasted = collections.Counter()
    by_thread = collections.Counter()
    first = last = None

    def queued(cpu):
        return [p for p in runnable if where.get(p) == cpu and p != running.get(cpu) and p != 0]

    for line in script.splitlines():
        m = EVENT.match(line)
        if not m:
            continue
        me, cpu, t, event, rest = int(m[2]), int(m[3]), float(m[4]), m[5], m[6]
        running.setdefault(cpu, 0)
        if first is None:
            first = t
        if last is not None:
            dt = t - last
            for c, pid in running.items():
                if pid != 0:
                    continue
                idle[c] += dt
                waiting = [p for o in running if o != c for p in queued(o)]
                if waiting:
                    wasted[c] += dt
                    for p in waiting:
                        key = (label(comm.get(p, "?")), label(comm.get(woken_by.get(p), "?")),
                               label(comm.get(running[where[p]], "?")))
                        by_thread[key] += dt / len(waiting)
        last = t
        fields = dict(FIELD.findall(rest))
        if event == "sched_waking":
            pid = int(fields["pid"])
            if pid not in runnable:
                woken_by[pid] = me
            runnable.add(pid)
            where.setdefault(pid, int(fields["target_cpu"]))
            comm[pid] = fields["comm"]
        elif event == "sched_migrate_task":
            where[int(fields["pid"])] = int(fields["dest_cpu"])
        elif event == "sched_switch":
            prev = int(fields["prev_pid"])
            nxt = int(fields["next_pid"])
            comm[prev] = fields["prev_comm"]
            comm[nxt] = rest.split("next_comm=")[1].split(" next_pid")[0]
            if prev != 0:
                where[prev] = cpu
                if not fields["prev_state"].startswith("R"):
                    runnable.discard(prev)
            running[cpu] = nxt
            if nxt != 0:
                where[nxt] = cpu
                runnable.add(nxt)

    span = (last - first) if first is not None and last is not None else 0.0
    if span <= 0:
        sys.exit("no scheduler events in " + path)
    print(f"{span:.3f} s recorded")
    for c in sorted(running):
        print(f"cpu{c}: idle {100 * idle[c] / span:.1f} %, of which another CPU had a thread "
              f"queued {100 * wasted[c] / span:.1f} %")
    print("wasted idle, ms per second, by (waiting thread, woken by, running ahead of it):")
    for key, seconds in by_thread.most_common(12):
        print(f"  {str(key):62s} {1000 * seconds / span:6.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
