#!/bin/sh
# A throwaway PostgreSQL cluster for the test suite (Debian's postgresql, binaries in /usr/lib/postgresql/N/bin).
#
#   scripts/pg-test-cluster.sh start DIR   -> initdb DIR/data, listen on 127.0.0.1:<free port> and a unix socket
#                                            in DIR/sock, print the admin URL (also written to DIR/url)
#   scripts/pg-test-cluster.sh stop DIR    -> stop it (the caller removes DIR)
#
# Run as root, the cluster belongs to the user `postgres` (initdb refuses root); DIR must be reachable by
# that user, so put it directly under /tmp rather than inside a 0700 directory. Authentication is `trust`
# on loopback only: this cluster holds nothing but test data and lives for one test run.
set -eu

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
    for candidate in /usr/lib/postgresql/*/bin; do
        [ -x "$candidate/initdb" ] && bindir=$candidate
    done
fi
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || { echo "no PostgreSQL server binaries found (set PG_BINDIR)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
    # A cluster left in DIR by an earlier run (a fixed DIR, an interrupted run) is thrown away first.
    if [ -d "$dir/data" ]; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        rm -rf "$dir/data" "$dir/sock" "$dir/url"
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    as_owner mkdir -p "$dir/sock"
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    # The port is chosen free now; in the unlikely race where another process takes it first, retry.
    tries=0
    while :; do
        port=$(free_port)
        if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
            -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >/dev/null 2>&1; then
            break
        fi
        tries=$((tries + 1))
        if [ $tries -ge 3 ]; then
            echo "PostgreSQL did not start:" >&2
            tail -n 20 "$dir/server.log" >&2
            exit 1
        fi
    done
    url="postgresql://postgres@127.0.0.1:$port/postgres"
    echo "$url" | as_owner tee "$dir/url" >/dev/null
    echo "$url"
    ;;
stop)
    [ -d "$dir/data" ] || exit 0
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    ;;
*)
    usage
    ;;
esac
