#!/bin/sh
# Provisions the recovery site of the DR tests: starts EMPTY servers (PostgreSQL, Redis)
# and the application (app.py) on the site's address, and prints what the runbook needs as
# KEY=VALUE lines (lb_ip, app_port, pg_port, redis_port). etcd is not started here: the
# restore brings up the member in the component's data-dir.
#
#   provision.sh SITE_DIR [TENANT]           start (a second call finds them running)
#   provision.sh --remove SITE_DIR           stop everything it started and delete it
#
# SITE_DIR/site.env (written by the test, tests/support/site.rs) gives IP, PG_PORT,
# REDIS_PORT, APP_PORT, PG_BIN, APP, SITE_A_APP_PORT, and optionally REDIS_EXTRA (more
# redis-server flags: a test's fault, such as a cache too small for the data). In a drill (HAVEN_DR_MODE=drill) it
# starts nothing. Each real call appends a line to SITE_DIR/provision.runs. Every pid goes to SITE_DIR/pids so the test can kill
# what is left. Background processes write to log files, never to our stdout: the runbook
# reads stdout to its end.
set -eu

stop_all() {
    dir=$1
    [ -f "$dir/pids" ] && while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$dir/pids"
    rm -rf "$dir/pg" "$dir/redis" "$dir/pids" "$dir"/*.log
}

if [ "${1:-}" = "--remove" ]; then
    stop_all "$2"
    exit 0
fi

dir=$1
. "$dir/site.env"

# A drill restores into scratch targets and must leave nothing behind: no site B. The
# system test then checks the application that serves now (site A's).
if [ "${HAVEN_DR_MODE:-run}" = drill ]; then
    echo "lb_ip=127.0.0.1"
    echo "app_port=$SITE_A_APP_PORT"
    echo "pg_port=0"
    echo "redis_port=0"
    exit 0
fi
if [ "${HAVEN_DR_MODE:-run}" = dry-run ]; then
    exit 0
fi

echo "$(date +%s) ${2:-}" >> "$dir/provision.runs"
pids="$dir/pids"
touch "$pids"

wait_for() { # what, command...
    what=$1; shift
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 600 ]; then echo "provision: $what did not come up" >&2; exit 1; fi
        sleep 0.1
    done
}

# PostgreSQL refuses to run as root: run it as the postgres system user.
as_pg=""
if [ "$(id -u)" = 0 ]; then as_pg="runuser -u postgres --"; fi
if ! $as_pg "$PG_BIN/pg_ctl" status -D "$dir/pg/data" >/dev/null 2>&1; then
    rm -rf "$dir/pg"
    mkdir -p "$dir/pg"
    [ -n "$as_pg" ] && chown postgres:postgres "$dir/pg"
    $as_pg "$PG_BIN/initdb" -D "$dir/pg/data" -U postgres -E UTF8 --no-locale --no-sync \
        --auth=trust > "$dir/pg/initdb.log" 2>&1
    $as_pg "$PG_BIN/pg_ctl" start -w -s -t 60 -D "$dir/pg/data" -l "$dir/pg/server.log" \
        -o "-p $PG_PORT -c listen_addresses=$IP -c unix_socket_directories=$dir/pg -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
        > /dev/null 2>&1 < /dev/null
    head -n 1 "$dir/pg/data/postmaster.pid" >> "$pids"
fi

if ! redis-cli -h "$IP" -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    mkdir -p "$dir/redis"
    redis-server --bind "$IP" --port "$REDIS_PORT" --dir "$dir/redis" --save "" \
        --appendonly no --daemonize yes --pidfile "$dir/redis/redis.pid" \
        --logfile "$dir/redis/redis.log" ${REDIS_EXTRA:-} < /dev/null > /dev/null 2>&1
    wait_for "redis-server on $IP:$REDIS_PORT" redis-cli -h "$IP" -p "$REDIS_PORT" ping
    cat "$dir/redis/redis.pid" >> "$pids"
fi

if ! python3 -c "import socket,sys; socket.create_connection(('$IP', $APP_PORT), 1)" 2>/dev/null; then
    setsid python3 "$APP" --host "$IP" --port "$APP_PORT" --psql "$PG_BIN/psql" \
        --db "postgresql://postgres@$IP:$PG_PORT/app" < /dev/null > "$dir/app.log" 2>&1 &
    echo $! >> "$pids"
    wait_for "app.py on $IP:$APP_PORT" python3 -c "import socket; socket.create_connection(('$IP', $APP_PORT), 1)"
fi

echo "lb_ip=$IP"
echo "app_port=$APP_PORT"
echo "pg_port=$PG_PORT"
echo "redis_port=$REDIS_PORT"
