#!/usr/bin/env python3
"""scale-table.py OUT N1 N2 ... - postdesk's throughput on top of N1, N2, ...
pre-stored tickets (run.sh scale: OUT/fill-N/anchors/summary.json each).

Per client and cell: postdesk msgs/s (median over runs) at each N, the ratio
of the last N to the first (target: >= 0.90, "within 10%"), and postdesk/
Postfix at each N (the same-run ratio, which cancels machine drift between
the two measurements). smtp-load.py rows add p50/p99 latency. Then memory:
the daemon's peak RSS during the C=32 runs and VmHWM with 256 sessions open.
"""
import json
import os
import sys


def jl(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            if line.strip().startswith("{"):
                out.append(json.loads(line))
    return out


def main():
    out, ns = sys.argv[1], [int(x) for x in sys.argv[2:]]
    data = {}
    for n in ns:
        p = os.path.join(out, "fill-%d" % n, "anchors", "summary.json")
        data[n] = {(r["client"], r["target"], r["size"], r["msgs_per_conn"], r["concurrency"]): r
                   for r in (json.load(open(p)) if os.path.exists(p) else [])}
    cells = sorted({k[2:] for n in ns for k in data[n] if k[1] == "daemon"})
    first, last = ns[0], ns[-1]
    print("\npostdesk on top of pre-stored tickets: %s" % ", ".join("%d" % n for n in ns))
    for client in ("source", "load"):
        print("\n%s" % {"source": "smtp-source", "load": "smtp-load.py"}[client])
        hdr = "%-7s %5s %3s " % ("size", "msgs/", "C")
        for n in ns:
            hdr += " %16s" % ("@%d msgs/s" % n)
        hdr += " %9s" % ("%s/%s" % (short(last), short(first)))
        for n in ns:
            hdr += " %10s" % ("/postfx@" + short(n))
        if client == "load":
            for n in ns:
                hdr += " %15s" % ("p50/p99@" + short(n))
        print(hdr)
        for cell in cells:
            size, mode, c = cell
            row = "%-7s %5s %3d " % ("%d KiB" % (size // 1024), "all" if mode == 0 else mode, c)
            rates = {}
            for n in ns:
                r = data[n].get((client, "daemon") + cell)
                rates[n] = r and r["msgs_per_s_median"]
                row += " %16s" % ("%.0f" % rates[n] if rates[n] else "-")
            if rates.get(first) and rates.get(last):
                q = rates[last] / rates[first]
                row += " %9s" % ("%.2f%s" % (q, " ok" if q >= 0.9 else " LOW"))
            else:
                row += " %9s" % "-"
            for n in ns:
                r = data[n].get((client, "daemon") + cell)
                row += " %10s" % ("%.2f" % r["vs_postfix"] if r and r.get("vs_postfix") else "-")
            if client == "load":
                for n in ns:
                    r = data[n].get((client, "daemon") + cell)
                    row += " %15s" % ("%.1f/%.1f" % (r["p50_ms"], r["p99_ms"]) if r else "-")
            print(row)
    print("\nmemory (daemon):")
    for n in ns:
        d = os.path.join(out, "fill-%d" % n)
        mem = [m for m in jl(os.path.join(d, "anchors", "mem.jsonl"))
               if m.get("label") == "daemon" and m.get("concurrency") == 32]
        s = jl(os.path.join(d, "sessions.json"))
        fill = json.load(open(os.path.join(d, "fill.json"))) if os.path.exists(
            os.path.join(d, "fill.json")) else {}
        peak = max([m.get("peak_rss_kib") or 0 for m in mem] or [0]) / 1024.0
        hwm = (max(s[0].get(k, {}).get("vmhwm_kib") or 0 for k in ("idle", "in_data", "committed", "after"))
               / 1024.0) if s else 0
        print("  %9d tickets (db %.2f GiB + blobs %.2f GiB): peak RSS during C=32 runs %.1f MiB; "
              "VmHWM with %s sessions open %.1f MiB" % (
                  n, (fill.get("db_bytes") or 0) / 2**30, (fill.get("blob_bytes") or 0) / 2**30,
                  peak, s[0]["k"] if s else "-", hwm))
    print("\nfills (bulk import, daemon stopped) and foreign CPU during each measurement:")
    for n in ns:
        d = os.path.join(out, "fill-%d" % n)
        fill = json.load(open(os.path.join(d, "fill.json"))) if os.path.exists(
            os.path.join(d, "fill.json")) else {}
        fc = jl(os.path.join(d, "foreign-cpu.json"))
        f = fc[0] if fc else {}
        print("  %9d tickets: generated in %s s, imported in %s s (%s msgs/s); foreign CPU in %s of %s "
              "5-s intervals (%s CPU-s), steal up to %s%%" % (
                  n, fill.get("gen_s"), fill.get("import_s"), fill.get("import_msgs_per_s"),
                  f.get("intervals_with_foreign_cpu"), f.get("samples"), f.get("foreign_cpu_s"),
                  f.get("steal_max_pct")))


def short(n):
    return "%dM" % (n // 1000000) if n >= 1000000 and n % 1000000 == 0 else (
        "%dk" % (n // 1000) if n >= 1000 and n % 1000 == 0 else str(n))


if __name__ == "__main__":
    main()
