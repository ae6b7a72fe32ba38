#!/usr/bin/env bash
# pg-cell.sh - anchors.sh's CELL_HOOK for postdesk on the PostgreSQL engine:
# a fresh database per measurement cell, one or two nodes on it.
#
#   pg-cell.sh ports TARGET     the target's SMTP ports, one per node
#   pg-cell.sh up TARGET DIR    CREATE DATABASE (psql), one config per node
#                               (write-config.sh ENGINE=postgres, node_ids b1,
#                               b2), `postdesk migrate` once; prints each
#                               node's serve command, one a line (anchors.sh
#                               starts them as its own children and stops them)
#   pg-cell.sh stats TARGET DIR every node's `ctl --json stats` and `health`
#                               (stdout), while the nodes still run
#   pg-cell.sh down TARGET DIR  DROP DATABASE ... WITH (FORCE); idempotent
#
# Targets: postdesk-pg (one node, port DAEMON_PORT+1), postdesk-pg2 (two
# nodes on one database, ports DAEMON_PORT+2 and +3; the load client splits
# its sessions between them).
#
# Env (set by run.sh): BIN (postdesk), PG_DIR (the cluster's dir from
# .ci/pg-start: its Unix socket is there), PG_PORT, PG_PSQL (psql),
# DAEMON_PORT (2525), POOL_SIZE (8). The nodes connect over the Unix socket
# ("host=PG_DIR port=PG_PORT user=postgres dbname=..."), as a node with
# PostgreSQL on the same box would.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ACTION=${1:-}; TARGET=${2:-}; DIR=${3:-}
DAEMON_PORT=${DAEMON_PORT:-2525}
case $TARGET in
  postdesk-pg) PORTS="$((DAEMON_PORT + 1))";;
  postdesk-pg2) PORTS="$((DAEMON_PORT + 2)) $((DAEMON_PORT + 3))";;
  *) echo "pg-cell.sh: unknown target '$TARGET'" >&2; exit 2;;
esac
if [ "$ACTION" = ports ]; then echo "$PORTS"; exit 0; fi
[ -n "$DIR" ] || { echo "usage: pg-cell.sh ports|up|stats|down TARGET [DIR]" >&2; exit 2; }
for v in BIN PG_DIR PG_PORT PG_PSQL; do
  [ -n "${!v:-}" ] || { echo "pg-cell.sh: $v is not set (run through bench/run.sh)" >&2; exit 2; }
done
psql_admin() {
  "$PG_PSQL" -X -q -At -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres "$@"
}

case $ACTION in
  up)
    mkdir -p "$DIR" || exit 1
    # one name per cell dir: pdbench_<run.sh pid>_<n>
    db=pdbench_$$_$(date +%s%N | tail -c 7)
    echo "$db" >"$DIR/dbname"
    psql_admin -c "CREATE DATABASE $db" >"$DIR/psql.log" 2>&1 \
      || { echo "pg-cell.sh: CREATE DATABASE $db failed: $(tail -n 3 "$DIR/psql.log")" >&2; exit 1; }
    echo "host=$PG_DIR port=$PG_PORT user=postgres dbname=$db" >"$DIR/pg.url"
    chmod 0600 "$DIR/pg.url"
    k=0; cmds=()
    for p in $PORTS; do
      k=$((k + 1))
      mkdir -p "$DIR/n$k"
      ENGINE=postgres PG_URL_FILE=$DIR/pg.url NODE_ID=b$k POOL_SIZE=${POOL_SIZE:-8} \
        bash "$HERE/write-config.sh" "$DIR/n$k.toml" "$DIR/n$k" "$p" || exit 1
      cmds+=("'$BIN' serve -c '$DIR/n$k.toml'")
    done
    t0=$(date +%s.%N)
    "$BIN" migrate -c "$DIR/n1.toml" >"$DIR/migrate.log" 2>&1 \
      || { echo "pg-cell.sh: migrate failed: $(tail -n 3 "$DIR/migrate.log")" >&2; exit 1; }
    echo "# $TARGET: database $db created and migrated in $(python3 -c "import time; print(round(time.time() - $t0, 2))") s; $k node(s) on ports $PORTS" >&2
    printf '%s\n' "${cmds[@]}"
    ;;
  stats)
    k=0
    for _ in $PORTS; do
      k=$((k + 1))
      "$BIN" ctl -c "$DIR/n$k.toml" --json stats && "$BIN" ctl -c "$DIR/n$k.toml" --json health
    done
    ;;
  down)
    [ -f "$DIR/dbname" ] || exit 0
    db=$(cat "$DIR/dbname")
    if psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >>"$DIR/psql.log" 2>&1; then
      rm -f "$DIR/dbname"; echo "# $TARGET: database $db dropped" >&2
    else
      echo "pg-cell.sh: DROP DATABASE $db failed: $(tail -n 3 "$DIR/psql.log")" >&2; exit 1
    fi
    ;;
  *) echo "usage: pg-cell.sh ports|up|stats|down TARGET [DIR]" >&2; exit 2;;
esac
