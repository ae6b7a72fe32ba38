#!/usr/bin/env bash
# profile.sh - where postdesk's time goes in one load cell (default: the
# headline one, 4 KiB, 1 message per connection, C=32, smtp-source).
#
#   bash bench/profile.sh                 # fresh store
#   FILL=1000000 bash bench/profile.sh    # on a copy of fill.sh's 1M-ticket store
#
# Starts smtp-sink (outbound relay, 127.0.0.1:2601) and the release daemon
# (127.0.0.1:DAEMON_PORT, scratch data dir, write-config.sh) by PID, warms up
# for 1 s, then for one load window of DUR seconds records at once:
#   - per-thread CPU of the daemon (/proc/PID/task/*/stat, utime+stime)
#   - whole-box CPU split (/proc/stat) and the client's own CPU
#   - the daemon's admin stats before/after: commits, mean batch, redb
#     transactions (several commits share one while jobs wait)
#   - fdatasync/fsync calls (perf stat on the syscall tracepoints)
#   - a cpu-clock sampling profile with DWARF call graphs (perf record), when
#     perf works; PERF=0 skips it (it costs the daemon some throughput)
# and prints the reports. Everything it starts is stopped by PID at the end.
#
# Knobs: C=32 SIZE=4096 PER_CONN=1 (0 = one connection per session)
#   CLIENT=source|load  DUR=5  FILL=<N>  PERF=1  PERF_FREQ=999
#   PRELOAD=<N> (N smtp-source messages from one sender before the window)
#   RATE_GUESS=1500 (smtp-source message count = DUR x this)
#   DAEMON_PORT=2525  OUT=<dir> (default ${TMPDIR:-/tmp}/postdesk-profile.<date>.<pid>)
#   BIN=<path> (another postdesk build, for an A/B of two binaries)
#   PERF_EVENTS=<list> (perf stat events; default the two sync syscalls, e.g.
#     add syscalls:sys_enter_futex,context-switches to count wake-ups)
#   RELAY_PORT=2601 (write-config.sh; smtp-sink always listens on 2601)
#   ACKS=0, STORE_CACHE=<size> (write-config.sh: no acknowledgement workflow;
#     server.store_cache)
#   KEEP_DATA=0
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
HERE=$REPO/bench
cd "$REPO" || exit 2
C=${C:-32}; SIZE=${SIZE:-4096}; PER_CONN=${PER_CONN:-1}; CLIENT=${CLIENT:-source}
DUR=${DUR:-5}; PERF=${PERF:-1}; PERF_FREQ=${PERF_FREQ:-999}; DAEMON_PORT=${DAEMON_PORT:-2525}
OUT=${OUT:-${TMPDIR:-/tmp}/postdesk-profile.$(date +%Y%m%d-%H%M%S).$$}
BIN=${BIN:-$REPO/target/release/postdesk}
[ -x "$BIN" ] || { echo "build first: cargo build --release --locked" >&2; exit 2; }
mkdir -p "$OUT/data" || exit 2
SP=""; DP=""; PP=""
stop_pid() {
  local p=$1
  # only our own child (never a PID the system has since handed to someone else)
  [ "$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')" = "$$" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null; return 0
}
cleanup() {
  [ -n "$PP" ] && stop_pid "$PP"
  [ -n "$DP" ] && stop_pid "$DP"
  [ -n "$SP" ] && stop_pid "$SP"
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$OUT/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for p in 2601 "$DAEMON_PORT"; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p busy; refusing" >&2; exit 2; }
done

if [ -n "${FILL:-}" ]; then
  fd=${FILL_DIR_BASE:-${TMPDIR:-/tmp}}/postdesk-fill-$FILL
  bash "$HERE/fill.sh" "$FILL" "$fd" || exit 1
  cp --sparse=always "$fd/data/postdesk.redb" "$OUT/data/postdesk.redb" || exit 1
  # the raw messages (fills made before the blob file have none)
  if [ -f "$fd/data/postdesk.blobs" ]; then
    cp "$fd/data/postdesk.blobs" "$OUT/data/postdesk.blobs" || exit 1
  fi
  sync   # the copy's dirty pages written back now, not during the load
fi
bash "$HERE/write-config.sh" "$OUT/postdesk.toml" "$OUT/data" "$DAEMON_PORT" || exit 1
U=(); [ "$(id -u)" = 0 ] && U=(-u nobody)
smtp-sink "${U[@]}" 127.0.0.1:2601 256 >/dev/null 2>&1 & SP=$!
"$BIN" serve -c "$OUT/postdesk.toml" >"$OUT/daemon.log" 2>&1 & DP=$!
for _ in $(seq 1 100); do ss -Hltn "sport = :$DAEMON_PORT" | grep -q . && break; sleep 0.1; done
echo "# profile: C=$C SIZE=$SIZE PER_CONN=$PER_CONN CLIENT=$CLIENT DUR=$DUR FILL=${FILL:-0} daemon pid $DP; loadavg $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/env.txt" >&2
python3 "$HERE/smtp-load.py" --port "$DAEMON_PORT" -c "$C" --procs $(( C > 1 ? 2 : 1 )) --count 100000 \
  --max-seconds 1 --size "$SIZE" --rcpt support@acme.example --timeout 10 >/dev/null 2>&1
if [ "${PRELOAD:-0}" -gt 0 ]; then   # PRELOAD=N: N smtp-source messages first (one sender, as in the matrix)
  s=$(date +%s.%N)
  timeout -k 5 600 smtp-source -s 32 -m "$PRELOAD" -l $(( (SIZE - 140) * 80 / 81 )) -f loadgen@bench.localhost \
    -t support@acme.example -M bench.localhost 127.0.0.1:"$DAEMON_PORT" >/dev/null 2>&1
  echo "# preload: $PRELOAD messages in $(python3 -c "print(round($(date +%s.%N)-$s,1))") s" | tee -a "$OUT/env.txt" >&2
fi

threads() {   # TID comm ticks(utime+stime)
  for t in /proc/"$DP"/task/*; do
    awk -v tid="${t##*/}" '{ s = $0; sub(/^[^)]*\) /, "", s); split(s, f, " ");
      c = $0; sub(/^[^(]*\(/, "", c); sub(/\).*/, "", c); gsub(/ /, "_", c);
      print tid, c, f[12] + f[13] }' "$t/stat" 2>/dev/null
  done
}
stats() { "$BIN" ctl -c "$OUT/postdesk.toml" --json stats; }
stats >"$OUT/stats-before.json"; threads >"$OUT/threads-before.txt"; c0=$(head -n1 /proc/stat)

PSTAT=(); command -v perf >/dev/null && \
  perf stat -e "${PERF_EVENTS:-syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync}" -p "$DP" -o "$OUT/perf-stat.txt" -- sleep "$DUR" >/dev/null 2>&1 &
PSTAT_PID=$!
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
  perf record -e cpu-clock -F "$PERF_FREQ" --call-graph dwarf,16384 -p "$DP" -o "$OUT/perf.data" \
    -- sleep "$DUR" >"$OUT/perf-record.log" 2>&1 & PP=$!
fi
t0=$(date +%s.%N)
if [ "$CLIENT" = load ]; then
  python3 "$HERE/smtp-load.py" --port "$DAEMON_PORT" -c "$C" --procs $(( C > 1 ? 2 : 1 )) --count 2000000 \
    --max-seconds "$DUR" --size "$SIZE" --per-conn "$PER_CONN" --rcpt support@acme.example \
    --reply-frac 0.5 --timeout 10 >"$OUT/client.json"
else
  # as anchors.sh: smtp-source has no time limit; ~DUR s at up to 3000 msgs/s, bounded by timeout(1)
  d=(); [ "$PER_CONN" = 0 ] && d=(-d)
  l=$(( (SIZE - 140) * 80 / 81 ))
  /usr/bin/time -f '{"client_cpu_s": %U, "client_sys_s": %S}' -o "$OUT/client-time.json" \
    timeout -k 5 $((DUR + 30)) smtp-source -s "$C" -m $((DUR * ${RATE_GUESS:-1500})) -l "$l" \
    -f loadgen@bench.localhost -t support@acme.example -M bench.localhost "${d[@]}" 127.0.0.1:"$DAEMON_PORT" \
    >/dev/null 2>"$OUT/client.err"
  echo "{\"rc\": $?, \"count\": $((DUR * ${RATE_GUESS:-1500}))}" >"$OUT/client.json"
fi
t1=$(date +%s.%N); c1=$(head -n1 /proc/stat)
stats >"$OUT/stats-after.json"; threads >"$OUT/threads-after.txt"
[ -n "$PP" ] && { wait "$PP" 2>/dev/null; PP=""; }
wait "$PSTAT_PID" 2>/dev/null

python3 - "$OUT" "$t0" "$t1" "$c0" "$c1" <<'PY'
import json, os, sys
out, t0, t1, c0, c1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
wall = t1 - t0
hz = os.sysconf("SC_CLK_TCK")
s0 = json.load(open(os.path.join(out, "stats-before.json")))["data"]
s1 = json.load(open(os.path.join(out, "stats-after.json")))["data"]
recv = s1["received"] - s0["received"]
commits = s1["store_commits"] - s0["store_commits"]
cb = s1["commit_batch_size"]["sum"] - s0["commit_batch_size"]["sum"]
txns = s1.get("store_transactions", 0) - s0.get("store_transactions", 0)
print("window %.2f s: %d messages received = %.0f msgs/s; %d commits (%.0f/s), mean batch %.1f jobs; "
      "%d redb transactions (%.0f/s, %.1f commits each)"
      % (wall, recv, recv / wall, commits, commits / wall, cb / max(1, commits),
         txns, txns / wall, commits / max(1, txns)))
print("tickets created %d, emails sent %d (outbound relay) in the window" % (
    s1["tickets_created"] - s0["tickets_created"], s1["emails"]["sent"] - s0["emails"]["sent"]))
a = [int(x) for x in c0.split()[1:9]]; b = [int(x) for x in c1.split()[1:9]]
d = [y - x for x, y in zip(a, b)]; tot = sum(d) or 1
print("box CPU: user %.0f%%  sys %.0f%%  idle %.0f%%  iowait %.0f%%  (2 vCPUs = 100%%)" % (
    100.0 * (d[0] + d[1]) / tot, 100.0 * (d[2] + d[5] + d[6]) / tot, 100.0 * d[3] / tot, 100.0 * d[4] / tot))
before = {l.split()[0]: l.split() for l in open(os.path.join(out, "threads-before.txt"))}
groups = {}
for l in open(os.path.join(out, "threads-after.txt")):
    tid, comm, ticks = l.split()
    prev = int(before[tid][2]) if tid in before else 0
    g = groups.setdefault(comm, [0, 0]); g[0] += int(ticks) - prev; g[1] += 1
print("daemon CPU by thread (%% of one core over the window):")
tot_d = 0
for comm, (t, n) in sorted(groups.items(), key=lambda x: -x[1][0]):
    tot_d += t
    if t:
        print("  %-22s x%-3d %5.0f%%" % (comm, n, 100.0 * t / hz / wall))
print("  %-22s      %5.0f%%   (%.0f us of daemon CPU per message)" % (
    "total", 100.0 * tot_d / hz / wall, 1e6 * tot_d / hz / max(1, recv)))
ct = os.path.join(out, "client-time.json")
if os.path.exists(ct):
    c = json.load(open(ct))
    print("client (smtp-source) CPU: %.0f%% of one core (%.0f us per message)" % (
        100.0 * (c["client_cpu_s"] + c["client_sys_s"]) / wall,
        1e6 * (c["client_cpu_s"] + c["client_sys_s"]) / max(1, recv)))
PY
[ -s "$OUT/perf-stat.txt" ] && grep -E 'syscalls|seconds time' "$OUT/perf-stat.txt" | sed 's/^/perf stat: /'
if [ -s "$OUT/perf.data" ]; then
  perf report -i "$OUT/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -n 12 >"$OUT/report-threads.txt"
  perf report -i "$OUT/perf.data" --no-children --sort dso,sym --stdio -g none --percent-limit 0.7 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -n 45 >"$OUT/report-self.txt"
  # inclusive (children) time per function, the project's and its storage/parsing crates' only
  # (percentages are of all samples of the daemon)
  KEEP='postdesk::|redb::|mail_parser::|mailin::|handlebars::|lettre::|serde_json::|sha2::|\[k\] (__x64_sys_|do_fsync|ext4_)'
  for t in store-writer tokio-rt-worker; do
    perf report -i "$OUT/perf.data" --children --comm "$t" --sort sym --stdio -g none --percent-limit 1 2>/dev/null \
      | grep -v '^#' | grep -E "$KEEP" | grep -v '(inlined)' | head -n 40 >"$OUT/report-$t.txt"
  done
  for f in threads self store-writer tokio-rt-worker; do echo "--- perf report ($f)"; cat "$OUT/report-$f.txt"; done
fi
echo "# raw: $OUT" >&2
