#!/usr/bin/env python3
"""foreign-cpu.py ROOTPID [--also PID]... [--interval 5] [--threshold 10] [--max-seconds 7200]

Watches, while a benchmark runs, for CPU used by processes that are not part
of it: anything that is neither ROOTPID nor one of its descendants nor a
Postfix daemon (Postfix's master is started by `postfix start` and is not our
descendant) nor an --also PID or its descendants (e.g. the postmaster of the
bench's own PostgreSQL cluster, which pg_ctl starts detached). Every --interval seconds it reads /proc/*/stat and reports each
foreign process that used more than --threshold % of one core during the
interval (e.g. someone else's cargo build on a shared box), plus the steal
time of the interval (CPU taken by the hypervisor: invisible to the load
average). On SIGTERM/SIGINT or after --max-seconds it prints one JSON line:
samples, intervals with foreign CPU, the foreign CPU-seconds in total, the
busiest foreign commands, and steal %. Reads /proc only; never signals anything.
"""
import json
import os
import signal
import sys
import time

POSTFIX = {"master", "smtpd", "cleanup", "qmgr", "discard", "trivial-rewrite", "proxymap",
           "anvil", "pickup", "tlsmgr", "showq", "bounce", "scache", "postdrop", "sendmail",
           "postfix", "postsuper", "postqueue", "postlog", "verify", "flush", "local"}
HZ = os.sysconf("SC_CLK_TCK")


def procs():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        f = st[st.rindex(")") + 2:].split()
        out[int(d)] = (comm, int(f[1]), int(f[11]) + int(f[12]))   # comm, ppid, utime+stime
    return out


def steal():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[7], sum(v)


def main():
    a = sys.argv[1:]
    if not a or not a[0].isdigit():
        sys.exit(__doc__)
    root = int(a[0])
    also = {int(a[i + 1]) for i, x in enumerate(a[:-1]) if x == "--also" and a[i + 1].isdigit()}
    opt = lambda n, d: float(a[a.index(n) + 1]) if n in a else d
    interval, thr, max_s = opt("--interval", 5.0), opt("--threshold", 10.0), opt("--max-seconds", 7200.0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    prev, (s0, t0) = procs(), steal()
    samples = hits = 0
    foreign_s = 0.0
    by_comm = {}
    steal_max = 0.0
    end = time.monotonic() + max_s
    while not stop and time.monotonic() < end:
        for _ in range(int(interval * 10)):
            if stop:
                break
            time.sleep(0.1)
        cur, (s1, t1) = procs(), steal()
        ours = {root} | also
        changed = True
        while changed:
            changed = False
            for p, (_, pp, _) in cur.items():
                if pp in ours and p not in ours:
                    ours.add(p)
                    changed = True
        samples += 1
        st_pct = 100.0 * (s1 - s0) / max(1, t1 - t0)
        steal_max = max(steal_max, st_pct)
        hit = False
        for p, (comm, _, ticks) in cur.items():
            if p in ours or comm in POSTFIX or p not in prev or prev[p][0] != comm:
                continue
            used = (ticks - prev[p][2]) / HZ
            pct = 100.0 * used / interval
            if pct >= thr:
                hit = True
                foreign_s += used
                by_comm[comm] = by_comm.get(comm, 0.0) + used
                print("%s foreign pid %d %s %.0f%%" % (time.strftime("%H:%M:%S"), p, comm, pct),
                      file=sys.stderr, flush=True)
        hits += hit
        prev, s0, t0 = cur, s1, t1
    top = sorted(by_comm.items(), key=lambda x: -x[1])[:5]
    print(json.dumps({"samples": samples, "interval_s": interval, "intervals_with_foreign_cpu": hits,
                      "foreign_cpu_s": round(foreign_s, 1),
                      "top": [[c, round(s, 1)] for c, s in top],
                      "steal_max_pct": round(steal_max, 1)}), flush=True)


if __name__ == "__main__":
    main()
