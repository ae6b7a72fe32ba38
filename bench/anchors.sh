#!/usr/bin/env bash
# anchors.sh - SMTP throughput/latency anchors on loopback: one run, one table.
#
# Targets (all 127.0.0.1):
#   sink     smtp-sink on :2601, started here and stopped by PID: the no-work limit
#   postfix  Postfix smtpd on :2602 (setup-postfix.sh): queue file fsync'd before
#            the 250, then discarded: the durable-accept anchor. `postfix start`
#            if it is not running and `postfix stop` at the end; a Postfix that
#            was already running is left running.
#   daemon   the project's daemon on :2525, when DAEMON=1 (already listening) or
#            DAEMON_CMD='...' (started here, stopped by PID at the end)
#   other    any other name in TARGETS is a per-cell target run by CELL_HOOK
#            (a script, run with bash): `CELL_HOOK ports T` prints its ports
#            (one per server process; several = the load is split between
#            them), `CELL_HOOK up T DIR` prepares a fresh store for one
#            size x mode x C cell and prints one command per line, which are
#            started here (as our children), waited for on their ports and
#            warmed up (1 s at C); after the cell's runs, `CELL_HOOK stats T
#            DIR` (stdout -> DIR/stats.json), the processes are stopped by PID
#            and `CELL_HOOK down T DIR` removes the store (also on exit).
#            DIR is $OUT/cells/T-SIZE-MODE-C. bench/pg-cell.sh is one.
# Clients: smtp-load.py (msgs/s + latency percentiles) and smtp-source (Postfix's
# C generator: msgs/s only, lowest client CPU). A target with several ports:
# smtp-load.py spreads its sessions over them in one window; smtp-source runs
# once per port at the same time (C and the count split evenly), msgs/s = all
# messages / the time until the last one finished. For every size x mode x C x run,
# every target is measured back to back, so all columns share the machine state.
#
# Knobs (env, defaults):
#   SIZES="4096 65536"   MODES="1 0" (messages per connection; 0 = one connection
#   per session for the whole run)   CONCS="1 8 32"   RUNS=3
#   DUR=3                seconds per smtp-load run (smtp-source gets about as long)
#   CLIENTS="load source"  PROCS=2 (smtp-load processes, capped at C)
#   RCPT=bench@localhost (space-separated list: smtp-load rotates, smtp-source uses
#   the first)   REPLY_FRAC=0 (smtp-load: share of replies to earlier messages)
#   BODY=text|attach     PIPELINING=0|1 (smtp-load)
#   TARGETS="sink postfix" (daemon is added by DAEMON=1 / DAEMON_CMD)
#   DAEMON_PORT=2525     OUT=<dir> (default: a new dir under ${TMPDIR:-/tmp})
#   MAX_TOTAL=3600       hard limit for the whole matrix, seconds
#   DRAIN_MAX=60         max wait for Postfix's queue to empty before each run
#   IDS_IN=<file>        seed smtp-load's reply pool (--ids-in), e.g. Message-IDs
#                        of tickets already in the daemon's store (bench/fill.sh)
#   DAEMON_STATS_CMD='...'  run (stdout -> $OUT/daemon-stats.json) after the
#                        matrix, while the daemon is still up
# (postdesk copy of ../shared/bench/anchors.sh; run it through bench/run.sh)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SIZES=${SIZES:-"4096 65536"}; MODES=${MODES:-"1 0"}; CONCS=${CONCS:-"1 8 32"}
RUNS=${RUNS:-3}; DUR=${DUR:-3}; CLIENTS=${CLIENTS:-"load source"}; PROCS=${PROCS:-2}
RCPT=${RCPT:-bench@localhost}; REPLY_FRAC=${REPLY_FRAC:-0}; BODY=${BODY:-text}
PIPELINING=${PIPELINING:-0}; TARGETS=${TARGETS:-"sink postfix"}
DAEMON_PORT=${DAEMON_PORT:-2525}; MAX_TOTAL=${MAX_TOTAL:-3600}; DRAIN_MAX=${DRAIN_MAX:-60}
OUT=${OUT:-${TMPDIR:-/tmp}/smtp-anchors.$(date +%Y%m%d-%H%M%S).$$}
SINK_PORT=2601; POSTFIX_PORT=2602
[ -n "${DAEMON_CMD:-}" ] && DAEMON=1
[ "${DAEMON:-0}" = 1 ] && case " $TARGETS " in *" daemon "*) ;; *) TARGETS="$TARGETS daemon";; esac
mkdir -p "$OUT" || exit 2
: >"$OUT/load.jsonl"; : >"$OUT/source.jsonl"; : >"$OUT/mem.jsonl"

SINK_PID=""; DAEMON_PID=""; PF_STARTED=0; SAMPLER_PID=""
declare -A CELL_PORTS=() CELL_PIDS=() CELL_DIRS=() CELL_OK=()
stop_pid() {   # stop one process we started, by PID: TERM, then KILL after 10 s
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  return 0
}
# merge TAG_JSON RESULT_JSON [CPU_BEFORE CPU_AFTER]: one JSON line; with the two
# /proc/stat "cpu" lines, adds the whole box's CPU split during the run (%)
merge() { python3 - "$@" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2]))
if len(sys.argv) > 4 and "box_idle_pct" not in d:   # smtp-load measures its own window
    a = [int(x) for x in sys.argv[3].split()[1:9]]
    b = [int(x) for x in sys.argv[4].split()[1:9]]
    dl = [y - x for x, y in zip(a, b)]; tot = sum(dl) or 1
    us, ni, sy, idl, iow, irq, sirq, st = (100.0 * v / tot for v in dl)
    d.update({"box_user_pct": round(us + ni, 1), "box_sys_pct": round(sy + irq + sirq, 1),
              "box_idle_pct": round(idl + iow, 1), "box_steal_pct": round(st, 1)})
print(json.dumps(d))
PY
}
is_cell() { [ -n "${CELL_PORTS[$1]:-}" ]; }
# cell_down T [nostats]: the cell's stats, its processes stopped, its store removed
cell_down() {
  local t=$1 d=${CELL_DIRS[$1]:-} p
  [ -n "$d" ] || return 0
  if [ -n "${CELL_PIDS[$t]:-}" ]; then
    if [ "${2:-}" != nostats ]; then
      timeout -k 5 30 bash "$CELL_HOOK" stats "$t" "$d" >"$d/stats.json" 2>"$d/stats.err" \
        || echo "# $t: stats failed: $(head -c 200 "$d/stats.err")" >&2
    fi
    for p in ${CELL_PIDS[$t]}; do stop_pid "$p"; done
    CELL_PIDS[$t]=""
  fi
  bash "$CELL_HOOK" down "$t" "$d" || echo "# $t: CELL_HOOK down failed for $d" >&2
  unset "CELL_DIRS[$t]"
}
# cell_up T SIZE MODE C: a fresh store and its processes for one cell (0 = ready)
cell_up() {
  local t=$1 d=$OUT/cells/$1-$2-$3-$4 c=$4 cmd k=0 p pids=()
  mkdir -p "$d" || return 1
  CELL_DIRS[$t]=$d
  for p in ${CELL_PORTS[$t]}; do
    listening "$p" && { echo "# $t: port $p busy; skipping this cell" >&2; return 1; }
  done
  bash "$CELL_HOOK" up "$t" "$d" >"$d/cmds" || { echo "# $t: CELL_HOOK up failed" >&2; return 1; }
  while IFS= read -r cmd; do
    [ -n "$cmd" ] || continue
    k=$((k + 1))
    bash -c "exec $cmd" >"$d/daemon-$k.log" 2>&1 </dev/null &
    pids+=("$!")
  done <"$d/cmds"
  CELL_PIDS[$t]="${pids[*]}"
  [ "$k" -ge 1 ] || { echo "# $t: CELL_HOOK up printed no command" >&2; return 1; }
  for p in ${CELL_PORTS[$t]}; do
    wait_listen "$p" || { echo "# $t: nothing listening on 127.0.0.1:$p: $(tail -n 3 "$d"/daemon-*.log)" >&2; return 1; }
  done
  p=${CELL_PORTS[$t]}
  python3 "$HERE/smtp-load.py" --port "${p// /,}" -c "$c" --count 100000 \
    --max-seconds 1 --size 4096 "${RCPT_ARGS[@]}" --timeout 10 >/dev/null 2>&1
  return 0
}
cleanup() {
  [ -n "$SAMPLER_PID" ] && stop_pid "$SAMPLER_PID"
  for t in "${!CELL_DIRS[@]}"; do cell_down "$t" nostats; done
  [ -n "$SINK_PID" ] && stop_pid "$SINK_PID" && echo "# smtp-sink stopped" >&2
  [ -n "$DAEMON_PID" ] && stop_pid "$DAEMON_PID" && echo "# daemon stopped" >&2
  if [ "$PF_STARTED" = 1 ]; then postfix stop >/dev/null 2>&1; echo "# postfix stopped (started here)" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q "127.0.0.1:$1 "; }
wait_listen() { for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done; return 1; }
port_for() { case $1 in sink) echo $SINK_PORT;; postfix) echo $POSTFIX_PORT;; daemon) echo "$DAEMON_PORT";;
  *) echo "${CELL_PORTS[$1]:-}";; esac; }
pid_for() {    # the PID whose memory we report
  case $1 in
    sink) echo "$SINK_PID";;
    postfix) cat "$(postconf -h queue_directory)/pid/master.pid" 2>/dev/null | tr -d ' ';;
    daemon) if [ -n "$DAEMON_PID" ]; then echo "$DAEMON_PID"; else
              ss -Hltnp "sport = :$DAEMON_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2; fi;;
    *) local ps=${CELL_PIDS[$1]:-}; echo "${ps%% *}";;   # the first node's
  esac
}
pf_queue_files() {
  local q; q=$(postconf -h queue_directory)
  find "$q/incoming" "$q/active" "$q/deferred" "$q/maildrop" -type f 2>/dev/null | wc -l
}
settle() {     # before each run: let Postfix's queue drain so no run inherits a backlog
  case " $TARGETS " in *" postfix "*)
    local i=0
    while [ "$(pf_queue_files)" -gt 0 ] && [ $i -lt $((DRAIN_MAX * 10)) ]; do sleep 0.1; i=$((i + 1)); done;;
  esac
  sleep 0.3
}
[ "$(echo "$RCPT" | wc -w)" -ge 1 ] || { echo "RCPT is empty" >&2; exit 2; }
RCPT_ARGS=(); for r in $RCPT; do RCPT_ARGS+=(--rcpt "$r"); done
RCPT1=${RCPT%% *}
LOAD_EXTRA=(--body "$BODY" --reply-frac "$REPLY_FRAC" --timeout 10)
[ "$PIPELINING" = 1 ] && LOAD_EXTRA+=(--pipelining)
[ -n "${IDS_IN:-}" ] && LOAD_EXTRA+=(--ids-in "$IDS_IN")

for t in $TARGETS; do case $t in
  sink)
    command -v smtp-sink >/dev/null || { echo "smtp-sink missing: run setup-postfix.sh" >&2; exit 2; }
    listening $SINK_PORT && { echo "port $SINK_PORT busy; refusing" >&2; exit 2; }
    U=(); [ "$(id -u)" = 0 ] && U=(-u nobody)
    smtp-sink "${U[@]}" 127.0.0.1:$SINK_PORT 256 >"$OUT/smtp-sink.log" 2>&1 &
    SINK_PID=$!
    wait_listen $SINK_PORT || { echo "smtp-sink did not start: $(cat "$OUT/smtp-sink.log")" >&2; exit 2; } ;;
  postfix)
    if ! grep -Eq '^127\.0\.0\.1:2602[[:space:]]+inet' "$(postconf -h config_directory)/master.cf" 2>/dev/null \
       || [ "$(postconf -h default_transport)" != discard ] || [ "$(postconf -h local_transport)" != discard ] \
       || [ "$(postconf -h inet_interfaces)" != loopback-only ]; then
      echo "postfix is not set up for the bench: run setup-postfix.sh" >&2; exit 2
    fi
    if ! postfix status >/dev/null 2>&1; then postfix start >/dev/null 2>&1 && PF_STARTED=1; fi
    wait_listen $POSTFIX_PORT || { echo "postfix not listening on 127.0.0.1:$POSTFIX_PORT" >&2; exit 2; } ;;
  daemon)
    if [ -n "${DAEMON_CMD:-}" ]; then
      listening "$DAEMON_PORT" && { echo "port $DAEMON_PORT busy; refusing to start DAEMON_CMD" >&2; exit 2; }
      bash -c "exec $DAEMON_CMD" >"$OUT/daemon.log" 2>&1 &
      DAEMON_PID=$!
    fi
    wait_listen "$DAEMON_PORT" || { echo "nothing listening on 127.0.0.1:$DAEMON_PORT" >&2; exit 2; } ;;
  *)
    [ -n "${CELL_HOOK:-}" ] || { echo "unknown target $t (and no CELL_HOOK)" >&2; exit 2; }
    ports=$(bash "$CELL_HOOK" ports "$t") && [ -n "$ports" ] || { echo "unknown target $t (CELL_HOOK $CELL_HOOK)" >&2; exit 2; }
    CELL_PORTS[$t]=$ports ;;
esac; done

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f MiB", $2/1024}' /proc/meminfo), kernel $(uname -r)"
  echo "postfix: $(postconf -h mail_version 2>/dev/null)"
  echo "knobs: SIZES=[$SIZES] MODES=[$MODES] CONCS=[$CONCS] RUNS=$RUNS DUR=$DUR CLIENTS=[$CLIENTS] PROCS=$PROCS RCPT=[$RCPT] REPLY_FRAC=$REPLY_FRAC BODY=$BODY PIPELINING=$PIPELINING TARGETS=[$TARGETS]"
} >"$OUT/env.txt"
echo "# anchors: $(tail -n1 "$OUT/env.txt" | cut -c8-) raw=$OUT" >&2

# warm-up: Postfix forks smtpd/cleanup on demand; don't bill that to the first cell
maxc=1; for c in $CONCS; do [ "$c" -gt "$maxc" ] && maxc=$c; done
for t in $TARGETS; do
  is_cell "$t" && continue     # warmed up in each cell, on its fresh store
  python3 "$HERE/smtp-load.py" --port "$(port_for "$t")" -c "$maxc" --count 100000 \
    --max-seconds 1 --size 4096 "${RCPT_ARGS[@]}" --timeout 10 >/dev/null 2>&1
done

T_START=$(date +%s)
for size in $SIZES; do for mode in $MODES; do for c in $CONCS; do
  pr=$PROCS; [ "$pr" -gt "$c" ] && pr=$c
  if [ $(( $(date +%s) - T_START )) -lt "$MAX_TOTAL" ]; then
    for t in $TARGETS; do
      is_cell "$t" || continue
      if cell_up "$t" "$size" "$mode" "$c"; then CELL_OK[$t]=1
      else CELL_OK[$t]=0; cell_down "$t" nostats; echo "# $t: not measured at size=$size mode=$mode C=$c" >&2; fi
    done
  fi
  for r in $(seq 1 "$RUNS"); do for t in $TARGETS; do
    if [ $(( $(date +%s) - T_START )) -ge "$MAX_TOTAL" ]; then
      echo "# MAX_TOTAL=$MAX_TOTAL s reached: stopping the matrix" >&2; break 5
    fi
    is_cell "$t" && [ "${CELL_OK[$t]:-0}" != 1 ] && continue
    p=$(port_for "$t"); tag="\"label\":\"$t\",\"size\":$size,\"mode\":$mode,\"concurrency\":$c,\"run\":$r"
    for cl in $CLIENTS; do
      settle
      pid=$(pid_for "$t"); SAMPLER_PID=""
      if [ -n "$pid" ]; then
        tree=(); [ "$t" = postfix ] && tree=(--tree)
        python3 "$HERE/rss-peak.py" "$pid" "${tree[@]}" --interval 0.25 \
          --max-seconds $((DUR * 10 + 60)) >"$OUT/.mem" &
        SAMPLER_PID=$!
      fi
      c0=$(head -n1 /proc/stat)
      if [ "$cl" = load ]; then
        line=$(python3 "$HERE/smtp-load.py" --port "${p// /,}" -c "$c" --procs "$pr" --count 2000000 \
          --max-seconds "$DUR" --size "$size" --per-conn "$mode" "${RCPT_ARGS[@]}" \
          "${LOAD_EXTRA[@]}" --label "$t")
        c1=$(head -n1 /proc/stat)
        [ -n "$line" ] || line='{"msgs_per_s": null, "failed": -1}'
        merge "{$tag,\"client\":\"load\"}" "$line" "$c0" "$c1" >>"$OUT/load.jsonl"
        rate=$(echo "$line" | python3 -c 'import json,sys; print(int(json.load(sys.stdin).get("msgs_per_s") or 0))')
        echo "$t size=$size mode=$mode C=$c run=$r load: $(echo "$line" | cut -c1-150)" >&2
      else
        # smtp-source has no time limit: size its count from the last smtp-load
        # rate of this cell (about DUR seconds), and bound it with timeout(1)
        n=$(( ${rate:-500} * DUR )); [ "$n" -lt 200 ] && n=200; [ "$n" -gt 200000 ] && n=200000
        [ "$n" -lt "$c" ] && n=$c
        d=(); [ "$mode" = 0 ] && d=(-d)
        # smtp-source -l counts payload bytes in 79-char lines without CRLF or headers
        l=$(( (size - 140) * 80 / 81 )); [ "$l" -lt 1 ] && l=1
        ports=($p); np=${#ports[@]}; [ "$np" -gt "$c" ] && np=$c
        parts=""
        s=$(date +%s.%N)
        if [ "$np" -le 1 ]; then
          timeout -k 5 $((DUR * 20 + 60)) smtp-source -s "$c" -m "$n" -l "$l" -f loadgen@bench.localhost \
            -t "$RCPT1" -M bench.localhost "${d[@]}" 127.0.0.1:"$p" >/dev/null 2>"$OUT/.source.err"
          rc=$?; e=$(date +%s.%N)
        else
          # one smtp-source per port, all at once: C and the count split evenly
          spids=(); : >"$OUT/.source.err"
          for ((k = 0; k < np; k++)); do
            sk=$(( c / np + (k < c % np) )); mk=$(( n / np + (k < n % np) ))
            ( timeout -k 5 $((DUR * 20 + 60)) smtp-source -s "$sk" -m "$mk" -l "$l" -f loadgen@bench.localhost \
                -t "$RCPT1" -M bench.localhost "${d[@]}" 127.0.0.1:"${ports[k]}" >/dev/null 2>"$OUT/.source.err.$k"
              echo "$? $(date +%s.%N) $sk $mk ${ports[k]}" >"$OUT/.source.rc.$k" ) &
            spids+=("$!")
          done
          for sp in "${spids[@]}"; do wait "$sp"; done
          e=$(date +%s.%N); rc=0
          for ((k = 0; k < np; k++)); do
            rck=1 ek=$e sk=0 mk=0 pk=0
            read -r rck ek sk mk pk <"$OUT/.source.rc.$k"
            [ "${rck:-1}" != 0 ] && rc=$rck
            parts="$parts${parts:+,}{\"port\":$pk,\"sessions\":$sk,\"count\":$mk,\"rc\":$rck,\"wall_s\":$(python3 -c "print(round($ek-$s,3))")}"
            cat "$OUT/.source.err.$k" >>"$OUT/.source.err"
          done
          rm -f "$OUT"/.source.rc.* "$OUT"/.source.err.*
        fi
        c1=$(head -n1 /proc/stat)
        v=$(python3 -c "print(round($n/($e-$s),1))")
        merge "{$tag,\"client\":\"source\"}" "{\"count\":$n,\"rc\":$rc,\"wall_s\":$(python3 -c "print(round($e-$s,3))"),\"msgs_per_s\":$v${parts:+,\"parts\":[$parts]}}" \
          "$c0" "$c1" >>"$OUT/source.jsonl"
        echo "$t size=$size mode=$mode C=$c run=$r source: n=$n rc=$rc msgs/s=$v $(head -c 120 "$OUT/.source.err")" >&2
      fi
      if [ -n "$SAMPLER_PID" ]; then
        stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
        [ -s "$OUT/.mem" ] && merge "{$tag,\"client\":\"$cl\"}" "$(cat "$OUT/.mem")" >>"$OUT/mem.jsonl"
      fi
    done
  done; done
  for t in "${!CELL_DIRS[@]}"; do cell_down "$t"; done
done; done; done
for t in "${!CELL_DIRS[@]}"; do cell_down "$t"; done   # after MAX_TOTAL's break
rm -f "$OUT/.mem" "$OUT/.source.err"

if case " $TARGETS " in *" postfix "*) true;; *) false;; esac; then
  echo "# postfix queue files left after the matrix: $(pf_queue_files)" >&2
fi
if [ -n "${DAEMON_STATS_CMD:-}" ]; then
  timeout -k 5 30 bash -c "$DAEMON_STATS_CMD" >"$OUT/daemon-stats.json" 2>"$OUT/daemon-stats.err" \
    || echo "# DAEMON_STATS_CMD failed: $(head -c 200 "$OUT/daemon-stats.err")" >&2
fi
python3 "$HERE/anchors-table.py" "$OUT" | tee "$OUT/table.txt"
