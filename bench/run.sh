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
# The matrix (run.sh, run.sh all) also measures the PostgreSQL engine when
# PostgreSQL is installed: targets postdesk-pg (one node) and postdesk-pg2 (two
# nodes on one database, the client's sessions split between them), beside
# redb ("daemon"), Postfix and smtp-sink in the same run. A private cluster
# is started for the run (.ci/pg-start: fsync and synchronous_commit on, its
# defaults otherwise) and stopped at the end; every cell gets a fresh
# database (CREATE DATABASE, `postdesk migrate`, serve; the nodes stopped and
# the database dropped after the cell: bench/pg-cell.sh). The nodes connect
# over the cluster's Unix socket, as an operator with PostgreSQL on the same
# box would (2-5 % faster than TCP loopback on this box: within the spread).
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
#   PG=auto           the postgres targets in the matrix: auto = if PostgreSQL
#     is installed (/usr/lib/postgresql/*/bin/initdb) and the cluster starts,
#     else skipped, saying why; 1 = required (.ci/pg-start installs the
#     package if missing, as root); 0 = never. TARGETS naming postdesk-pg or
#     postdesk-pg2 means PG=1; TARGETS without them, PG=0. Not in scale mode
#     nor with FILL (those stores are redb). Default matrix TARGETS with
#     PostgreSQL: "sink postfix postdesk-pg postdesk-pg2 daemon".
#   POOL_SIZE=8       storage.pool_size of the postgres nodes
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
case $MODE in matrix|scale|sessions|all) ;; *) sed -n '2,59p' "$0"; exit 2;; esac
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
PG_DIR=""       # the private PostgreSQL cluster this script started (.ci/pg-start)
cleanup() {
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [ -n "$PG_DIR" ]; then
    bash "$REPO/.ci/pg-start" --stop "$PG_DIR" 2>>"$OUT/pg-start.log" \
      && echo "# PostgreSQL cluster $PG_DIR stopped" >&2
  fi
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

# --- PostgreSQL: a private cluster for the postdesk-pg targets ------------------
PG_NOTE=""          # why the postgres targets are not measured, if they are not
PG_WANT=${PG:-auto}
if [ -n "${TARGETS:-}" ]; then
  case " $TARGETS " in *" postdesk-pg "*|*" postdesk-pg2 "*) PG_WANT=1;; *) PG_WANT=0;; esac
fi
case $MODE in matrix|all) ;; *) PG_WANT=0;; esac
if [ -n "${FILL:-}" ] && [ "$PG_WANT" != 0 ]; then
  [ "$PG_WANT" = 1 ] && { echo "FILL pre-fills a redb store: no postgres targets with it" >&2; exit 2; }
  PG_WANT=0; PG_NOTE="not measured: FILL pre-fills a redb store"
fi
if [ "$PG_WANT" != 0 ]; then
  if [ "$PG_WANT" = auto ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    PG_NOTE="not measured: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; PG=1 installs it, as root)"
  elif pg_env=$(bash "$REPO/.ci/pg-start" 2>"$OUT/pg-start.log"); then
    PG_DIR=$(eval "$pg_env"; echo "${POSTDESK_TEST_PG_DIR:-}")
    PG_URL=$(eval "$pg_env"; echo "${POSTDESK_TEST_PG_URL:-}")
    PG_PORT=$(echo "$PG_URL" | sed -n 's#^postgres://[^@]*@[^:]*:\([0-9]*\)/.*#\1#p')
    PG_PSQL=$(cat "$PG_DIR/postdesk-test-cluster" 2>/dev/null)/psql
    if [ -z "$PG_PORT" ] || [ ! -S "$PG_DIR/.s.PGSQL.$PG_PORT" ] || [ ! -x "$PG_PSQL" ]; then
      PG_NOTE="not measured: .ci/pg-start gave '$PG_URL' in '$PG_DIR', but no socket or psql there"
    fi
  else
    PG_NOTE="not measured: the cluster did not start (.ci/pg-start: $(tail -n 1 "$OUT/pg-start.log"))"
  fi
  if [ -n "$PG_NOTE" ] && [ "$PG_WANT" = 1 ]; then
    echo "postgres targets asked for (PG=1 or TARGETS), but $PG_NOTE" >&2; exit 1
  fi
fi
if [ -n "$PG_NOTE" ]; then
  echo "# PostgreSQL targets $PG_NOTE" >&2
  MATRIX_TARGETS=${TARGETS:-"sink postfix"}
elif [ -n "$PG_DIR" ]; then
  MATRIX_TARGETS=${TARGETS:-"sink postfix postdesk-pg postdesk-pg2 daemon"}
  export BIN PG_DIR PG_PORT PG_PSQL POOL_SIZE=${POOL_SIZE:-8}
  PG_FACTS=$("$PG_PSQL" -X -q -At -F'|' -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -c \
    "SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'),
            current_setting('wal_sync_method'), current_setting('full_page_writes'), current_setting('shared_buffers'),
            current_setting('max_connections')" 2>&1 | head -n 1 \
    | awk -F'|' '{printf "PostgreSQL %s; fsync %s, synchronous_commit %s, wal_sync_method %s, full_page_writes %s, shared_buffers %s, max_connections %s", $1, $2, $3, $4, $5, $6, $7}')
  PG_NOTE="$PG_FACTS; a private cluster (.ci/pg-start, $PG_DIR); the nodes connect over its Unix socket (host=$PG_DIR port=$PG_PORT), as with PostgreSQL on the same box (2-5 % faster than TCP loopback on this box, within the spread); pool_size $POOL_SIZE; a fresh database per cell"
  echo "# postgres targets: $PG_NOTE" >&2
else
  MATRIX_TARGETS=${TARGETS:-"sink postfix"}
fi
# scale and fill measurements: redb only
SCALE_TARGETS=$(for t in ${TARGETS:-sink postfix}; do case $t in postdesk-pg|postdesk-pg2) ;; *) printf '%s ' "$t";; esac; done)

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
  [ -n "$PG_NOTE" ] && echo "postgres targets: $PG_NOTE"
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
# measure NAME TARGETS [FILL_N]: scratch dir $OUT/NAME (config, data, anchors/)
measure() {
  local name=$1 targets=$2 n=${3:-} w=$OUT/$1 ids=""
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
  ENGINE=redb bash "$HERE/write-config.sh" "$w/postdesk.toml" "$w/data" "$DAEMON_PORT" || return 1
  case " $targets " in *" postdesk-pg"*) echo "$PG_NOTE" >"$w/pg.txt";;
    *) [ "$name" = matrix ] && [ -n "$PG_NOTE" ] && echo "$PG_NOTE" >"$w/pg.txt";; esac
  wait_quiet "$name"
  # someone else's CPU use during the measurement (shared box): recorded, not prevented
  local also=()   # our PostgreSQL cluster's processes are part of the bench
  [ -n "$PG_DIR" ] && [ -r "$PG_DIR/data/postmaster.pid" ] && also=(--also "$(head -n 1 "$PG_DIR/data/postmaster.pid")")
  python3 "$HERE/foreign-cpu.py" $$ "${also[@]}" --interval 5 --threshold 10 >"$w/foreign-cpu.json" 2>"$w/foreign-cpu.log" &
  local mon=$!; PIDS+=("$mon")
  local stats="'$BIN' ctl -c '$w/postdesk.toml' --json stats && '$BIN' ctl -c '$w/postdesk.toml' --json health"
  OUT=$w/anchors IDS_IN=$ids DAEMON_STATS_CMD=$stats TARGETS=$targets CELL_HOOK=$HERE/pg-cell.sh \
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
    ENGINE=redb bash "$HERE/write-config.sh" "$w/postdesk.toml" "$w/data" "$DAEMON_PORT" || return 1; }
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
    measure matrix "$MATRIX_TARGETS" ${FILL:+"$FILL"} ;;
  sessions)
    sessions_probe "$OUT/sessions"; SCRATCH+=("$OUT/sessions/data") ;;
esac
if [ "$MODE" = scale ] || [ "$MODE" = all ]; then
  if [ "$MODE" = scale ]; then   # SIZES/MODES/CONCS narrow it; in "all" they were the matrix's
    export SIZES=${SIZES:-4096} MODES=${MODES:-1} CONCS=${CONCS:-"1 8 32"}
  else
    export SIZES=4096 MODES=1 CONCS="1 8 32"
  fi
  for n in $SCALE_NS; do measure "fill-$n" "$SCALE_TARGETS" "$n"; done
  python3 "$HERE/scale-table.py" "$OUT" $SCALE_NS | tee "$OUT/scale.txt"
fi
echo "# done: raw results in $OUT" >&2
