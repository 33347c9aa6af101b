#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for scale-out runs and tests (Debian's `postgresql`).
#
#   scripts/postgres.sh start DIR   initdb, start on 127.0.0.1 on a free port, create the
#                                   databases `optuna` and `mlflow`; prints three lines:
#                                     PID=<postmaster pid>
#                                     OPTUNA_URL=postgresql+psycopg2://postgres@127.0.0.1:<port>/optuna
#                                     MLFLOW_URL=postgresql+psycopg2://postgres@127.0.0.1:<port>/mlflow
#   scripts/postgres.sh stop DIR    stop that cluster (fast shutdown of its postmaster PID)
#
# Runs the server as the `postgres` user when started as root; trust auth on 127.0.0.1 only.
# DIR keeps the state (logs, port, the cluster's path); the cluster itself lives in a fresh
# /tmp/inc_flow_pg.* directory that the server's user can reach, removed by `stop`.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "postgres.sh: PostgreSQL binaries not found (apt-get install postgresql)" >&2
  exit 3
fi
as_pg() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
user="$(if [ "$(id -u)" = "0" ]; then echo postgres; else id -un; fi)"

case "$cmd" in
  start)
    mkdir -p "$dir"
    cluster="$(mktemp -d /tmp/inc_flow_pg.XXXXXX)"
    echo "$cluster" >"$dir/cluster"
    if [ "$(id -u)" = "0" ]; then chown postgres "$cluster"; fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    if ! as_pg "$bin/initdb" -D "$cluster/data" -U "$user" --auth=trust -E UTF8 \
      >"$cluster/initdb.log" 2>&1; then
      cat "$cluster/initdb.log" >&2
      exit 1
    fi
    if ! as_pg "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $port -k $cluster -c fsync=off -c max_connections=200" start >/dev/null; then
      cat "$cluster/server.log" >&2
      exit 1
    fi
    pid="$(head -1 "$cluster/data/postmaster.pid")"
    echo "$pid" >"$dir/pid"
    for db in optuna mlflow; do
      as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db"
    done
    echo "$port" >"$dir/port"
    echo "PID=$pid"
    echo "OPTUNA_URL=postgresql+psycopg2://$user@127.0.0.1:$port/optuna"
    echo "MLFLOW_URL=postgresql+psycopg2://$user@127.0.0.1:$port/mlflow"
    ;;
  stop)
    [ -f "$dir/pid" ] || exit 0
    pid="$(cat "$dir/pid")"
    cluster="$(cat "$dir/cluster")"
    kill -INT "$pid" 2>/dev/null || true   # fast shutdown of this postmaster only
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    case "$cluster" in /tmp/inc_flow_pg.*) rm -rf "$cluster" ;; esac
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
