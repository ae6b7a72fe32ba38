#!/usr/bin/env bash
# fill.sh N [DIR] - a postdesk data dir with N tickets already stored, through
# the bulk path (not SMTP): gen-mbox.py streams N distinct new-thread emails
# into mbox files of FILL_CHUNK messages, then `postdesk import --mbox` loads
# each one with the daemon stopped (straight into the store writer, group
# commit, up to 64 messages in flight). Import runs no automation and sends
# nothing: these are N tickets at status "new" with one message each.
#
# DIR (default ${TMPDIR:-/tmp}/postdesk-fill-N) gets:
#   postdesk.toml  the bench config (write-config.sh), data_dir = DIR/data
#   data/postdesk.redb, data/postdesk.blobs (the store and its raw messages)
#   ids.jsonl      a sample of FILL_IDS stored Message-IDs (smtp-load --ids-in)
#   fill.json      N, generation and import seconds, rates, database size
# A DIR whose fill.json already says N tickets is reused as is (delete it to
# rebuild). run.sh copies the store's files before each measurement, so the
# fill itself is never written to by a benchmark.
#
# Knobs: FILL_CHUNK=100000 (messages per mbox / import call), FILL_SIZE=2048
# (body bytes per message), FILL_SENDERS=1000, FILL_IDS=10000,
# FILL_MAX=1800 (seconds: stop importing further chunks after this; the
# fill.json then says how many tickets there really are).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
HERE=$REPO/bench
N=${1:?usage: fill.sh N [DIR]}
DIR=${2:-${TMPDIR:-/tmp}/postdesk-fill-$N}
FILL_CHUNK=${FILL_CHUNK:-100000}; FILL_SIZE=${FILL_SIZE:-2048}
FILL_SENDERS=${FILL_SENDERS:-1000}; FILL_IDS=${FILL_IDS:-10000}; FILL_MAX=${FILL_MAX:-1800}
BIN=$REPO/target/release/postdesk
[ -x "$BIN" ] || { echo "fill.sh: build first (cargo build --release --locked)" >&2; exit 2; }
case $N in ''|*[!0-9]*) echo "fill.sh: N must be a number" >&2; exit 2;; esac

if [ -f "$DIR/fill.json" ] && python3 -c "import json,sys; d=json.load(open('$DIR/fill.json')); sys.exit(0 if d['requested']==$N and d['complete'] else 1)"; then
  echo "# fill.sh: reusing $DIR ($(cat "$DIR/fill.json"))" >&2
  exit 0
fi
rm -rf "$DIR/data" "$DIR/mbox" "$DIR/fill.json"
mkdir -p "$DIR/mbox" "$DIR/data"
bash "$HERE/write-config.sh" "$DIR/postdesk.toml" "$DIR/data" || exit 2

t0=$(date +%s.%N)
gen=$(python3 "$HERE/gen-mbox.py" "$N" "$DIR/mbox" --chunk "$FILL_CHUNK" --size "$FILL_SIZE" \
      --senders "$FILL_SENDERS" --ids-sample "$FILL_IDS") || { echo "fill.sh: gen-mbox failed" >&2; exit 1; }
mv "$DIR/mbox/ids.jsonl" "$DIR/ids.jsonl"
t1=$(date +%s.%N)
echo "# fill.sh: generated $gen in $(python3 -c "print(round($t1-$t0,1))") s" >&2

imported=0; complete=1; : >"$DIR/import.log"
for f in "$DIR"/mbox/fill-*.mbox; do
  if [ "$(python3 -c "print(int($(date +%s.%N)-$t1))")" -ge "$FILL_MAX" ]; then
    echo "# fill.sh: FILL_MAX=$FILL_MAX s reached, stopping the import" >&2; complete=0; break
  fi
  s=$(date +%s.%N)
  # summary line: "N messages: N new tickets, ..."
  "$BIN" import -c "$DIR/postdesk.toml" --mbox "$f" >>"$DIR/import.log" 2>&1 || {
    echo "fill.sh: import of $f failed: $(tail -n3 "$DIR/import.log")" >&2; exit 1; }
  e=$(date +%s.%N)
  n=$(grep -o '^[0-9]* messages' "$DIR/import.log" | tail -n1 | cut -d' ' -f1)
  imported=$((imported + ${n:-0}))
  echo "# fill.sh: $(basename "$f"): ${n:-?} messages in $(python3 -c "print(round($e-$s,1))") s (total $imported)" >&2
  rm -f "$f"
done
t2=$(date +%s.%N)
rm -rf "$DIR/mbox"
created=$(grep -o '[0-9]* new tickets' "$DIR/import.log" | awk '{s += $1} END {print s + 0}')
python3 - "$DIR" "$N" "$imported" "$created" "$t0" "$t1" "$t2" "$complete" "$FILL_SIZE" <<'PY'
import json, os, sys
d, n, imp, created, t0, t1, t2, complete, size = sys.argv[1:]
t0, t1, t2 = float(t0), float(t1), float(t2)
db = os.path.join(d, "data", "postdesk.redb")
out = {"requested": int(n), "imported": int(imp), "tickets_created": int(created),
       "complete": complete == "1" and int(created) == int(n), "body_bytes": int(size),
       "gen_s": round(t1 - t0, 1), "import_s": round(t2 - t1, 1),
       "import_msgs_per_s": round(int(imp) / (t2 - t1), 1) if t2 > t1 else None,
       "db_bytes": os.path.getsize(db) if os.path.exists(db) else None,
       "blob_bytes": os.path.getsize(db[:-len("redb")] + "blobs")
       if os.path.exists(db[:-len("redb")] + "blobs") else None}
json.dump(out, open(os.path.join(d, "fill.json"), "w"))
print(json.dumps(out))
PY
