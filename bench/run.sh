#!/usr/bin/env bash
# run.sh - postdesk's benchmark. From the repository root:
#
#   bash bench/run.sh            the matrix: smtp-sink, Postfix and postdesk on
#                                loopback, same clients, same run (anchors.sh),
#                                then memory with 256 sessions open
#   bash bench/run.sh scale      the headline cells (4 KiB, 1 msg/conn,
#                                C = 1 8 32) on top of stores pre-filled with
#                                SCALE_NS tickets (fill.sh), then the 1M/1k
#                                comparison and memory with 256 sessions open
#   bash bench/run.sh sessions   only the 256-session memory probe
#   bash bench/run.sh all        matrix, then scale
#
# Every mode: `cargo build --release --locked`; installs Postfix through
# setup-postfix.sh if it is missing (root, Debian); waits until the 1-minute
# load average is below LOAD_MAX before each measurement; writes a scratch
# config (write-config.sh: 127.0.0.1 only, data in a temp dir, auto-replies on
# and relayed to smtp-sink) and lets anchors.sh start the daemon through
# DAEMON_CMD and stop it by PID. 250 still means fsync'd: nothing about the
# daemon is changed for the bench. Prints the tables and the targets check;
# everything raw stays under OUT.
#
# Knobs (env; the anchors.sh ones pass through):
#   SIZES MODES CONCS RUNS DUR CLIENTS PROCS TARGETS MAX_TOTAL (see anchors.sh;
#     scale mode: SIZES=4096 MODES=1 CONCS="1 8 32" unless given)
#   RCPT=support@acme.example  REPLY_FRAC=0.5   DAEMON_PORT=2525
#   FILL=N            matrix mode on top of N pre-stored tickets (fill.sh)
#   SCALE_NS="1000 1000000"   FILL_DIR_BASE=${TMPDIR:-/tmp}  (fills are cached
#     there as postdesk-fill-N and copied before each use)
#   SESSIONS=256      sessions held open by the memory probe (0 = skip it)
#   LOAD_MAX=0.7 LOAD_WAIT=1200 (seconds; then measure anyway, and say so)
#   SKIP_BUILD=0      KEEP_DATA=0 (1 = keep the scratch data dirs)
#   PAGE_REPORTING_MS=<ms>  on a VM whose kernel hands freed memory back to
#     the hypervisor at once (virtio-balloon free page reporting,
#     /sys/module/page_reporting/parameters/min_free_ms = 0), a page the
#     kernel allocates later may first fault on the host. This knob (root)
#     sets min_free_ms for the run and puts the old value back at the end;
#     the setting is recorded in facts.txt either way. (It did not explain
#     the spread of the 1M phase on the reference host: BENCHMARKS.md.)
#   OUT=<dir>         default ${TMPDIR:-/tmp}/postdesk-bench.<date>.<pid>
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
HERE=$REPO/bench
cd "$REPO" || exit 2
MODE=${1:-matrix}
case $MODE in matrix|scale|sessions|all) ;; *) sed -n '2,35p' "$0"; exit 2;; esac
export RCPT=${RCPT:-support@acme.example}
export REPLY_FRAC=${REPLY_FRAC:-0.5}
export DAEMON_PORT=${DAEMON_PORT:-2525}
LOAD_MAX=${LOAD_MAX:-0.7}; LOAD_WAIT=${LOAD_WAIT:-1200}
SESSIONS=${SESSIONS:-256}; SCALE_NS=${SCALE_NS:-"1000 1000000"}
FILL_DIR_BASE=${FILL_DIR_BASE:-${TMPDIR:-/tmp}}
OUT=${OUT:-${TMPDIR:-/tmp}/postdesk-bench.$(date +%Y%m%d-%H%M%S).$$}
BIN=$REPO/target/release/postdesk
mkdir -p "$OUT" || exit 2
echo "# run.sh $MODE: raw results in $OUT" >&2

SCRATCH=()      # data dirs to remove at the end (unless KEEP_DATA=1)
PIDS=()         # processes this script started itself (the probe's daemon and sink)
stop_pid() {    # TERM one process we started, KILL after 10 s
  local p=$1
  # only our own child (never a PID the system has since handed to someone else)
  [ "$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')" = "$$" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  return 0
}
PR=/sys/module/page_reporting/parameters/min_free_ms
PR_OLD=""
cleanup() {
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  [ -n "$PR_OLD" ] && echo "$PR_OLD" >"$PR" 2>/dev/null
  if [ "${KEEP_DATA:-0}" != 1 ]; then for d in "${SCRATCH[@]}"; do rm -rf "$d"; done; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build, Postfix -----------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "# cargo build --release --locked" >&2
  cargo build --release --locked >"$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log" >&2; exit 1; }
fi
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 1; }
pf_ready() {
  command -v postfix >/dev/null && command -v smtp-sink >/dev/null && command -v smtp-source >/dev/null \
    && grep -Eq '^127\.0\.0\.1:2602[[:space:]]+inet' "$(postconf -h config_directory 2>/dev/null)/master.cf" 2>/dev/null
}
if ! pf_ready; then
  [ "$(id -u)" = 0 ] || { echo "Postfix is missing: run 'sudo bash bench/setup-postfix.sh' once" >&2; exit 2; }
  bash "$HERE/setup-postfix.sh" >"$OUT/setup-postfix.log" 2>&1 || { tail -n 20 "$OUT/setup-postfix.log" >&2; exit 1; }
fi

# --- machine facts --------------------------------------------------------------
wait_quiet() {  # wait (bounded) until the 1-minute load is below LOAD_MAX; log it
  local what=$1 t0 l
  t0=$(date +%s)
  while :; do
    l=$(cut -d' ' -f1 /proc/loadavg)
    if python3 -c "import sys; sys.exit(0 if $l < $LOAD_MAX else 1)"; then break; fi
    if [ $(( $(date +%s) - t0 )) -ge "$LOAD_WAIT" ]; then
      echo "# load $l still >= $LOAD_MAX after ${LOAD_WAIT}s: measuring anyway" >&2; break
    fi
    echo "# load $l >= $LOAD_MAX: waiting 30 s before $what" >&2; sleep 30
  done
  echo "$(date -u +%H:%M:%S) before $what: loadavg $(cut -d' ' -f1-3 /proc/loadavg) (waited $(( $(date +%s) - t0 )) s)" | tee -a "$OUT/load.txt" >&2
}
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "mem: $(awk '/MemTotal/ {printf "%.0f MiB", $2/1024}' /proc/meminfo); kernel $(uname -r)"
  echo "postdesk: $(git rev-parse --short HEAD 2>/dev/null) (+$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l) uncommitted files in src/Cargo)"
  echo "postfix: $(postconf -h mail_version 2>/dev/null)"
  echo "fs: $(findmnt -no SOURCE,FSTYPE -T "$OUT" 2>/dev/null)"
} >"$OUT/facts.txt"
if [ -r "$PR" ]; then
  if [ -n "${PAGE_REPORTING_MS:-}" ]; then
    old=$(cat "$PR")
    if echo "$PAGE_REPORTING_MS" >"$PR" 2>/dev/null; then PR_OLD=$old
    else echo "# cannot set $PR to $PAGE_REPORTING_MS (root? the kernel caps it)" >&2; fi
  fi
  echo "free page reporting: min_free_ms $(cat "$PR")${PR_OLD:+ for this run (was $PR_OLD)}" >>"$OUT/facts.txt"
fi
wait_quiet "fsync-probe"
for m in append overwrite; do
  echo "fsync-probe $m: $(python3 "$HERE/fsync-probe.py" "$OUT" 500 --mode $m)" >>"$OUT/facts.txt"
done
cat "$OUT/facts.txt" >&2

# --- one measurement: anchors.sh with postdesk as the third target --------------
# measure NAME [FILL_N]: scratch dir $OUT/NAME (config, data, anchors/)
measure() {
  local name=$1 n=${2:-} w=$OUT/$1 ids=""
  mkdir -p "$w/data"; SCRATCH+=("$w/data")
  if [ -n "$n" ]; then
    local fd=$FILL_DIR_BASE/postdesk-fill-$n
    wait_quiet "fill $n"
    bash "$HERE/fill.sh" "$n" "$fd" || return 1
    cp "$fd/fill.json" "$w/fill.json"
    echo "# copying the $n-ticket store ($(du -ch "$fd"/data/postdesk.{redb,blobs} 2>/dev/null | tail -1 | cut -f1))" >&2
    cp --sparse=always "$fd/data/postdesk.redb" "$w/data/postdesk.redb" || return 1
    # the raw messages (fills made before the blob file have none)
    if [ -f "$fd/data/postdesk.blobs" ]; then
      cp "$fd/data/postdesk.blobs" "$w/data/postdesk.blobs" || return 1
    fi
    # the copy's gigabytes of dirty pages written back now, not during the load
    sync
    ids=$fd/ids.jsonl
  fi
  bash "$HERE/write-config.sh" "$w/postdesk.toml" "$w/data" "$DAEMON_PORT" || return 1
  wait_quiet "$name"
  # someone else's CPU use during the measurement (shared box): recorded, not prevented
  python3 "$HERE/foreign-cpu.py" $$ --interval 5 --threshold 10 >"$w/foreign-cpu.json" 2>"$w/foreign-cpu.log" &
  local mon=$!; PIDS+=("$mon")
  local stats="'$BIN' ctl -c '$w/postdesk.toml' --json stats && '$BIN' ctl -c '$w/postdesk.toml' --json health"
  OUT=$w/anchors IDS_IN=$ids DAEMON_STATS_CMD=$stats \
    DAEMON_CMD="'$BIN' serve -c '$w/postdesk.toml'" bash "$HERE/anchors.sh"
  local rc=$?
  stop_pid "$mon"
  cut -d' ' -f1-3 /proc/loadavg >"$w/load-after.txt"
  [ "$SESSIONS" -gt 0 ] && sessions_probe "$w"
  python3 "$HERE/targets.py" "$w" | tee "$w/targets.txt"
  return $rc
}

# --- memory with SESSIONS sessions open, on a freshly started daemon ------------
sessions_probe() {
  local w=$1 sp dp
  [ -f "$w/postdesk.toml" ] || { mkdir -p "$w/data"; SCRATCH+=("$w/data")
    bash "$HERE/write-config.sh" "$w/postdesk.toml" "$w/data" "$DAEMON_PORT" || return 1; }
  for p in 2601 "$DAEMON_PORT"; do
    ss -Hltn "sport = :$p" | grep -q . && { echo "port $p busy: skipping the sessions probe" >&2; return 1; }
  done
  wait_quiet "sessions probe ($w)"
  U=(); [ "$(id -u)" = 0 ] && U=(-u nobody)
  smtp-sink "${U[@]}" 127.0.0.1:2601 256 >/dev/null 2>&1 & sp=$!; PIDS+=("$sp")
  "$BIN" serve -c "$w/postdesk.toml" >"$w/sessions-daemon.log" 2>&1 & dp=$!; PIDS+=("$dp")
  for _ in $(seq 1 100); do ss -Hltn "sport = :$DAEMON_PORT" | grep -q . && break; sleep 0.1; done
  python3 "$HERE/sessions.py" --port "$DAEMON_PORT" --pid "$dp" -k "$SESSIONS" --rcpt "${RCPT%% *}" \
    | tee "$w/sessions.json" >&2
  stop_pid "$dp"; stop_pid "$sp"
}

case $MODE in
  matrix|all)
    measure matrix ${FILL:+"$FILL"} ;;
  sessions)
    sessions_probe "$OUT/sessions"; SCRATCH+=("$OUT/sessions/data") ;;
esac
if [ "$MODE" = scale ] || [ "$MODE" = all ]; then
  if [ "$MODE" = scale ]; then   # SIZES/MODES/CONCS narrow it; in "all" they were the matrix's
    export SIZES=${SIZES:-4096} MODES=${MODES:-1} CONCS=${CONCS:-"1 8 32"}
  else
    export SIZES=4096 MODES=1 CONCS="1 8 32"
  fi
  for n in $SCALE_NS; do measure "fill-$n" "$n"; done
  python3 "$HERE/scale-table.py" "$OUT" $SCALE_NS | tee "$OUT/scale.txt"
fi
echo "# done: raw results in $OUT" >&2
