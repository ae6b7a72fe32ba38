#!/usr/bin/env python3
"""targets.py DIR - issue 7's targets, checked against one run.sh measurement.

DIR is one measurement of run.sh (DIR/anchors/summary.json from anchors.sh,
DIR/anchors/mem.jsonl, DIR/anchors/daemon-stats.json from the daemon's admin
`stats` and `health` just before it was stopped, DIR/sessions.json from
sessions.py, DIR/fill.json when the store was pre-filled). Prints what the
daemon did (so a fast number cannot hide skipped work: duplicates, 451s,
tickets, threading, emails queued) and each target as met / NOT met / n/a.

Targets (4 KiB, 1 message per connection, ratios from the same run):
  postdesk >= 2x Postfix at C=1, >= 4x Postfix at C=8 and C=32,
  >= 0.5x smtp-sink at C=32; p99 (end of DATA -> 250) at C=32 <= 1/3 of
  Postfix's (smtp-load.py: the only client with latencies); peak RSS <= 64 MiB
  at C=32 and with 256 sessions open. smtp-source is the primary client for
  the throughput ratios (it is the cheapest: client CPU is CPU the servers
  don't get); smtp-load.py's ratios are shown too. A ratio made from a cell
  where the hypervisor stole more than STEAL_WARN % of the CPU is flagged.

Issue 18's (the PostgreSQL engine; when the run measured postdesk-pg and
postdesk-pg2, DIR/pg.txt says how, or why not, and each cell's nodes'
stats/health are in DIR/anchors/cells/*/stats.json):
  postdesk-pg (one node) >= 1.5x Postfix at C=8 and C=32; postdesk-pg2 (two
  nodes on one database, the client's sessions split between them) >= one
  node at C=8 and C=32 ("two nodes together no slower than one").
"""
import json
import os
import sys

MIB = 1024.0
# Steal (whole-box median of a cell, %) above which a ratio is flagged: on a
# shared host a stolen slice lands in the critical path of few sessions.
STEAL_WARN = 10


def jl(path):
    rows = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def objects(path):
    """Consecutive (pretty-printed) JSON objects in one file."""
    out, dec = [], json.JSONDecoder()
    if os.path.exists(path):
        text, i = open(path).read(), 0
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                break
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                break
            out.append(obj)
    return out


def main():
    d = sys.argv[1]
    a = os.path.join(d, "anchors")
    summary = json.load(open(os.path.join(a, "summary.json"))) if os.path.exists(
        os.path.join(a, "summary.json")) else []
    cell = {(r["client"], r["target"], r["size"], r["msgs_per_conn"], r["concurrency"]): r
            for r in summary}
    mem = jl(os.path.join(a, "mem.jsonl"))
    stats = objects(os.path.join(a, "daemon-stats.json"))
    sess = jl(os.path.join(d, "sessions.json"))
    fill = json.load(open(os.path.join(d, "fill.json"))) if os.path.exists(
        os.path.join(d, "fill.json")) else None

    print("\n== %s" % d)
    fc = jl(os.path.join(d, "foreign-cpu.json"))
    if fc:
        f = fc[0]
        print("foreign CPU during the measurement: %s of %s 5-s intervals had another process above "
              "10%% of a core (%.0f CPU-s in total%s); steal up to %.0f%%" % (
                  f["intervals_with_foreign_cpu"], f["samples"], f["foreign_cpu_s"],
                  (": " + ", ".join("%s %.0f s" % (c, t) for c, t in f["top"])) if f["top"] else "",
                  f["steal_max_pct"]))
    if fill:
        print("store pre-filled with %d tickets (bulk import: %.1f s for %d messages = %.0f msgs/s; "
              "database %.2f GiB, blobs %.2f GiB)" % (
                  fill["tickets_created"], fill["import_s"], fill["imported"],
                  fill["import_msgs_per_s"] or 0, (fill["db_bytes"] or 0) / 2**30,
                  (fill.get("blob_bytes") or 0) / 2**30))
    if stats:
        s = stats[0].get("data", {})
        h = stats[1].get("data", {}) if len(stats) > 1 else {}
        cb = s.get("commit_batch_size", {})
        em = s.get("emails", {})
        print("daemon at the end (admin stats/health): received %s, tickets created %s, threaded %s, "
              "duplicates %s, 451 %s, 421 %s; emails queued %s sent %s deferred %s failed %s; "
              "suppressed %s; commits %s, mean batch %.1f msgs, redb transactions %s; tickets in store %s, "
              "outbox pending %s" % (
                  s.get("received"), s.get("tickets_created"), s.get("threaded_by"),
                  s.get("duplicates"), s.get("refused_451"), s.get("sessions_refused_421"),
                  em.get("queued"), em.get("sent"), em.get("deferred"), em.get("failed"),
                  s.get("suppressed"), s.get("store_commits"),
                  (cb.get("sum", 0) / cb["count"]) if cb.get("count") else 0,
                  s.get("store_transactions", "n/a"),
                  h.get("tickets"), h.get("outbox_pending")))

    def get(client, target, c, size=4096, mode=1):
        return cell.get((client, target, size, mode, c))

    def line(name, ok, detail):
        state = "n/a    " if ok is None else ("met    " if ok else "NOT met")
        print("  %-52s %s  %s" % (name, state, detail))

    def steal(*cells):
        """A warning when the hypervisor took more than STEAL_WARN % of the
        CPU during one of the cells a ratio is made of."""
        worst = max((r.get("box_steal_pct") or 0) for r in cells if r) if any(cells) else 0
        return "  [steal up to %.0f%%: this ratio is unreliable]" % worst if worst > STEAL_WARN else ""

    print("targets (4 KiB, 1 msg/conn):")
    for client in ("source", "load"):
        label = {"source": "smtp-source", "load": "smtp-load.py"}[client]
        for c, want in ((1, 2.0), (8, 4.0), (32, 4.0)):
            r = get(client, "daemon", c)
            v = r and r.get("vs_postfix")
            line("%s: postdesk >= %.0fx Postfix at C=%d" % (label, want, c),
                 None if v is None else v >= want,
                 "-" if v is None else "%.2fx (%.0f vs %.0f msgs/s)%s" % (
                     v, r["msgs_per_s_median"], get(client, "postfix", c)["msgs_per_s_median"],
                     steal(r, get(client, "postfix", c))))
        r = get(client, "daemon", 32)
        v = r and r.get("vs_sink")
        line("%s: postdesk >= 0.5x smtp-sink at C=32" % label, None if v is None else v >= 0.5,
             "-" if v is None else "%.2fx (%.0f vs %.0f msgs/s)%s" % (
                 v, r["msgs_per_s_median"], get(client, "sink", 32)["msgs_per_s_median"],
                 steal(r, get(client, "sink", 32))))
    r, p = get("load", "daemon", 32), get("load", "postfix", 32)
    if r and p and r.get("p99_ms") == r.get("p99_ms") and p.get("p99_ms"):
        line("p99 end of DATA -> 250 at C=32 <= 1/3 Postfix's", r["p99_ms"] <= p["p99_ms"] / 3,
             "%.2f ms vs Postfix %.2f ms (limit %.2f); p50 %.2f vs %.2f" % (
                 r["p99_ms"], p["p99_ms"], p["p99_ms"] / 3, r["p50_ms"], p["p50_ms"]))
    else:
        line("p99 end of DATA -> 250 at C=32 <= 1/3 Postfix's", None, "-")
    m = [x for x in mem if x.get("label") == "daemon" and x.get("concurrency") == 32
         and x.get("size") == 4096 and x.get("mode") == 1]
    if m:
        peak = max(x.get("peak_rss_kib") or 0 for x in m) / MIB
        line("peak RSS <= 64 MiB at C=32 (4 KiB, 1 msg/conn)", peak <= 64,
             "%.1f MiB (sampled every 0.25 s during those runs)" % peak)
    else:
        line("peak RSS <= 64 MiB at C=32", None, "-")
    allm = [x for x in mem if x.get("label") == "daemon"]
    if allm:
        hwm = max(x.get("hwm_kib") or 0 for x in allm) / MIB
        print("  (daemon VmHWM over the whole matrix, every size: %.1f MiB)" % hwm)
    if sess:
        s = sess[0]
        hwm = max(s.get(k, {}).get("vmhwm_kib") or 0 for k in ("idle", "in_data", "committed", "after"))
        line("peak RSS <= 64 MiB with %d sessions open" % s["k"], hwm / MIB <= 64 and "error" not in s,
             "VmHWM %.1f MiB; RSS idle %.1f, in DATA (%d KiB each) %.1f, after %d commits %.1f MiB%s" % (
                 hwm / MIB, (s.get("idle", {}).get("vmrss_kib") or 0) / MIB, s["body_bytes"] // 1024,
                 (s.get("in_data", {}).get("vmrss_kib") or 0) / MIB, s["k"],
                 (s.get("committed", {}).get("vmrss_kib") or 0) / MIB,
                 ("; ERROR " + s["error"]) if "error" in s else ""))
        print("  (sessions probe reply codes: %s)" % s.get("codes"))

    pg_txt = os.path.join(d, "pg.txt")
    has_pg = any(k[1].startswith("postdesk-pg") for k in cell)
    if not has_pg and not os.path.exists(pg_txt):
        return
    print("PostgreSQL engine (issue 18): %s" % (
        open(pg_txt).read().strip() if os.path.exists(pg_txt) else "-"))
    cells_dir = os.path.join(a, "cells")
    for name in sorted(os.listdir(cells_dir)) if os.path.isdir(cells_dir) else []:
        objs = objects(os.path.join(cells_dir, name, "stats.json"))
        nodes = [(objs[i].get("data", {}), objs[i + 1].get("data", {}))
                 for i in range(0, len(objs) - 1, 2)]
        if not nodes:
            print("  %s: no stats" % name)
            continue
        tot = lambda k: sum((s.get(k) or 0) for s, _ in nodes)
        em = lambda k: sum((s.get("emails", {}).get(k) or 0) for s, _ in nodes)
        h = nodes[-1][1]
        print("  %s: %d node(s) (health lists %d live); received %d, tickets created %d, "
              "duplicates %d, 451 %d, 421 %d; emails queued %d sent %d deferred %d failed %d; "
              "tickets in the database %s, outbox pending %s" % (
                  name, len(nodes), len(h.get("nodes") or []), tot("received"), tot("tickets_created"),
                  tot("duplicates"), tot("refused_451"), tot("sessions_refused_421"),
                  em("queued"), em("sent"), em("deferred"), em("failed"),
                  h.get("tickets"), h.get("outbox_pending")))
    for client in ("source", "load"):
        label = {"source": "smtp-source", "load": "smtp-load.py"}[client]
        for c in (8, 32):
            r, pf, rd = get(client, "postdesk-pg", c), get(client, "postfix", c), get(client, "daemon", c)
            v = r and r.get("vs_postfix")
            line("%s: postgres >= 1.5x Postfix at C=%d" % (label, c),
                 None if v is None else v >= 1.5,
                 "-" if v is None else "%.2fx (%.0f vs %.0f msgs/s; redb %s)%s" % (
                     v, r["msgs_per_s_median"], pf["msgs_per_s_median"],
                     "%.0f" % rd["msgs_per_s_median"] if rd and rd.get("msgs_per_s_median") else "-",
                     steal(r, pf)))
        for c in (8, 32):
            one, two = get(client, "postdesk-pg", c), get(client, "postdesk-pg2", c)
            a1 = one and one.get("msgs_per_s_median")
            a2 = two and two.get("msgs_per_s_median")
            line("%s: two nodes >= one node at C=%d" % (label, c),
                 None if not (a1 and a2) else a2 >= a1,
                 "-" if not (a1 and a2) else "%.2fx (%.0f msgs/s with two nodes vs %.0f with one; "
                 "ranges %.0f-%.0f vs %.0f-%.0f)%s" % (
                     a2 / a1, a2, a1, two["msgs_per_s_min"], two["msgs_per_s_max"],
                     one["msgs_per_s_min"], one["msgs_per_s_max"], steal(one, two)))


if __name__ == "__main__":
    main()
