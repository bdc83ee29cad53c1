#!/usr/bin/env bash
# The lifecycle demo: a private Redis, nginx serving the demo shop with
# the module loaded, and lifecycle-agent writing its e-mails to an
# outbox directory. Everything it writes stays under build/demo/.
#
#   scripts/demo.sh start     start (or report that it is already running)
#   scripts/demo.sh stop      graceful stop of the agent, nginx and Redis
#   scripts/demo.sh status    what runs, where; exit 0 only if all run
#
# Environment:
#   DEMO_PORT        the shop's port on 127.0.0.1 (default 8080)
#   DEMO_REDIS_PORT  the private Redis port on 127.0.0.1 (default 6390)
#   NGINX            nginx binary (default /usr/sbin/nginx)
#   LIFECYCLE_MODULE the module (default build/ngx_http_lifecycle_module.so)
#   LIFECYCLE_AGENT  the agent (default build/lifecycle-agent)
#
# "make demo" installs missing packages, builds the module and the agent
# and runs "start"; "make demo-stop" runs "stop".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PREFIX=$ROOT/build/demo
SHOP=$ROOT/conf/demo/shop
DEMO=$ROOT/conf/demo
TEMPLATE=$ROOT/conf/demo/nginx.conf.in
CONF=$PREFIX/nginx.conf
SECRET=$PREFIX/secret
REDIS_DIR=$PREFIX/redis

PORT=${DEMO_PORT:-8080}
REDIS_PORT=${DEMO_REDIS_PORT:-6390}
NGINX=${NGINX:-/usr/sbin/nginx}
MODULE=${LIFECYCLE_MODULE:-$ROOT/build/ngx_http_lifecycle_module.so}
AGENT=${LIFECYCLE_AGENT:-$ROOT/build/lifecycle-agent}
AGENT_TEMPLATE=$ROOT/conf/demo/agent.conf.in
AGENT_CONF=$PREFIX/agent.conf
OUTBOX=$PREFIX/outbox

NGINX_PID=$PREFIX/nginx.pid
REDIS_PID=$REDIS_DIR/redis.pid
AGENT_PID=$PREFIX/agent.pid

say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 1; }

# Relative paths (make, the README) print nicer than absolute ones.
rel() { case "$1" in "$ROOT"/*) echo "${1#"$ROOT"/}" ;; *) echo "$1" ;; esac; }

# pid from FILE if that process is alive and is NAME (not a recycled pid).
running_pid() {
    local file=$1 name=$2 pid
    [ -r "$file" ] || return 1
    pid=$(tr -dc 0-9 < "$file")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$name" || return 1
    echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait up to $2 tenths of a second for a condition (a command).
wait_for() {
    local n=$1; shift
    while [ "$n" -gt 0 ]; do
        "$@" && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

not_running() { ! kill -0 "$1" 2>/dev/null; }

redis_ready() { redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_redis() {
    local pid
    if pid=$(running_pid "$REDIS_PID" redis-server); then
        say "Redis already running (pid $pid, port $REDIS_PORT)"
        return
    fi
    command -v redis-server >/dev/null || die "redis-server not found: run make demo (installs it)"
    port_in_use "$REDIS_PORT" &&
        die "port $REDIS_PORT is in use by another program: set DEMO_REDIS_PORT"
    mkdir -p "$REDIS_DIR"
    # Its own directory, port and files; snapshots so the data survives a
    # stop/start of the demo. Never the system Redis (6379).
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
        --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_PID" \
        --logfile "$REDIS_DIR/redis.log" --save "60 1" --appendonly no \
        </dev/null
    wait_for 50 redis_ready ||
        die "Redis did not start: see $(rel "$REDIS_DIR/redis.log")"
    say "Redis started on 127.0.0.1:$REDIS_PORT (data in $(rel "$REDIS_DIR"))"
}

make_secret() {
    [ -s "$SECRET" ] && return
    # 32 random bytes as 64 hex characters; kept across restarts so the
    # visitors' cookies stay valid. nginx reads it in the master process
    # at start, as the user who starts the demo: 0600 is enough.
    ( umask 077
      head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' > "$SECRET.tmp"
      mv "$SECRET.tmp" "$SECRET" )
    say "new secret in $(rel "$SECRET")"
}

# The user nginx's workers run as when the master runs as root: they serve
# the shop's files, so nobody if nobody can read them, else the owner of
# the checkout (a repository under /root is not readable by nobody).
user_line() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "# not started as root: the workers run as $(id -un)"
        return
    fi
    if id nobody >/dev/null 2>&1 &&
       runuser -u nobody -- test -r "$SHOP/index.html" 2>/dev/null; then
        echo "user nobody $(id -gn nobody);"
    else
        echo "user $(stat -c '%U %G' "$ROOT");"
    fi
}

# a value for the right-hand side of sed's s|||
esc() { printf '%s' "$1" | sed 's/[\\&|]/\\&/g'; }

render_conf() {
    local user
    user=$(user_line)
    mkdir -p "$PREFIX/tmp"
    # comment lines keep their @NAME@s: they document the template
    sed -e "/^[[:space:]]*#/!{
                s|@PREFIX@|$(esc "$PREFIX")|g
                s|@SHOP@|$(esc "$SHOP")|g
                s|@DEMO@|$(esc "$DEMO")|g
                s|@MODULE@|$(esc "$PREFIX/ngx_http_lifecycle_module.so")|g
                s|@SECRET@|$(esc "$SECRET")|g
                s|@REDIS@|127.0.0.1:$REDIS_PORT|g
                s|@PORT@|$PORT|g
                s|@USER@|$(esc "$user")|g
            }" \
        "$TEMPLATE" > "$CONF.tmp"
    if grep -v '^[[:space:]]*#' "$CONF.tmp" | grep -q '@[A-Z]*@'; then
        die "$(rel "$TEMPLATE") has a placeholder demo.sh does not know"
    fi
    mv "$CONF.tmp" "$CONF"
}

nginx_cmd() { "$NGINX" -p "$PREFIX" -c nginx.conf -e error.log "$@"; }

start_nginx() {
    local pid
    if pid=$(running_pid "$NGINX_PID" nginx); then
        say "nginx already running (pid $pid, port $PORT)"
        return
    fi
    [ -x "$NGINX" ] || die "$NGINX not found: run make demo (installs nginx-core)"
    [ -f "$MODULE" ] || die "module $(rel "$MODULE") not built: run make demo"
    port_in_use "$PORT" &&
        die "port $PORT is in use by another program: set DEMO_PORT"
    make_secret
    # nginx runs a copy: "make" rewrites the built file in place, which
    # would crash workers that have it mapped.
    cp "$MODULE" "$PREFIX/module.so.tmp"
    mv "$PREFIX/module.so.tmp" "$PREFIX/ngx_http_lifecycle_module.so"
    render_conf
    if ! nginx_cmd -t -q; then
        die "nginx rejected $(rel "$CONF") (see above)"
    fi
    nginx_cmd </dev/null ||
        die "nginx did not start: see $(rel "$PREFIX/error.log")"
    wait_for 50 port_in_use "$PORT" ||
        die "nginx is not answering on port $PORT: see $(rel "$PREFIX/error.log")"
    say "nginx started on 127.0.0.1:$PORT (config $(rel "$CONF"))"
}

render_agent_conf() {
    sed -e "/^[[:space:]]*#/!{
                s|@PREFIX@|$(esc "$PREFIX")|g
                s|@DEMO@|$(esc "$DEMO")|g
                s|@TEMPLATES@|$(esc "$ROOT/agent/templates")|g
                s|@SECRET@|$(esc "$SECRET")|g
                s|@REDIS@|127.0.0.1:$REDIS_PORT|g
                s|@PORT@|$PORT|g
            }" \
        "$AGENT_TEMPLATE" > "$AGENT_CONF.tmp"
    if grep -v '^[[:space:]]*#' "$AGENT_CONF.tmp" | grep -q '@[A-Z]*@'; then
        die "$(rel "$AGENT_TEMPLATE") has a placeholder demo.sh does not know"
    fi
    mv "$AGENT_CONF.tmp" "$AGENT_CONF"
}

start_agent() {
    local pid
    if pid=$(running_pid "$AGENT_PID" lifecycle-agent); then
        say "lifecycle-agent already running (pid $pid)"
        return
    fi
    [ -x "$AGENT" ] || die "agent $(rel "$AGENT") not built: run make demo"
    mkdir -p "$OUTBOX"
    # a copy, as for the module: "make" replaces the built file
    cp "$AGENT" "$PREFIX/lifecycle-agent.tmp"
    mv "$PREFIX/lifecycle-agent.tmp" "$PREFIX/lifecycle-agent"
    render_agent_conf
    "$PREFIX/lifecycle-agent" -c "$AGENT_CONF" -t >/dev/null ||
        die "lifecycle-agent rejected $(rel "$AGENT_CONF") (see above)"
    nohup "$PREFIX/lifecycle-agent" -c "$AGENT_CONF" \
        </dev/null >>"$PREFIX/agent.log" 2>&1 &
    echo $! > "$AGENT_PID"
    sleep 0.3
    running_pid "$AGENT_PID" lifecycle-agent >/dev/null ||
        die "lifecycle-agent did not start: see $(rel "$PREFIX/agent.log")"
    say "lifecycle-agent started (outbox $(rel "$OUTBOX"), log $(rel "$PREFIX/agent.log"))"
}

stop_one() {
    local what=$1 pidfile=$2 name=$3 sig=$4 pid
    if ! pid=$(running_pid "$pidfile" "$name"); then
        say "$what not running"
        return
    fi
    kill -"$sig" "$pid"
    if ! wait_for 100 not_running "$pid"; then
        say "$what (pid $pid) still running after 10s: sending TERM"
        kill -TERM "$pid" 2>/dev/null || true
        wait_for 50 not_running "$pid" || die "$what (pid $pid) did not stop"
    fi
    say "$what stopped"
}

show_urls() {
    cat <<EOF

The demo shop:      http://127.0.0.1:$PORT/
  a product:        http://127.0.0.1:$PORT/product/p1.html
  a category:       http://127.0.0.1:$PORT/category/shoes.html
  a search:         http://127.0.0.1:$PORT/search?q=boots
  metrics:          http://127.0.0.1:$PORT/lifecycle/status

Try:   curl -si http://127.0.0.1:$PORT/product/p1.html | head -12
Data:  redis-cli -p $REDIS_PORT --scan --pattern 'lc:*'
       redis-cli -p $REDIS_PORT hgetall lc:{hh}:v:VID   (VID from the cookie)
Logs:  $(rel "$PREFIX/access.log")  (vid= and sess= on every line)
       $(rel "$PREFIX/error.log")
       $(rel "$PREFIX/agent.log")  (one line per message decision)
Mail:  $(rel "$OUTBOX")/*.eml  (a minute after a visitor who opted in leaves)
Agent: $(rel "$PREFIX/lifecycle-agent") -c $(rel "$AGENT_CONF") status
Stop:  make demo-stop
EOF
}

cmd_start() {
    local n r g
    n=$(running_pid "$NGINX_PID" nginx) || n=
    r=$(running_pid "$REDIS_PID" redis-server) || r=
    g=$(running_pid "$AGENT_PID" lifecycle-agent) || g=
    # "make demo" after a change to the module: run the new build
    if [ -n "$n" ] && [ -f "$MODULE" ] &&
       ! cmp -s "$MODULE" "$PREFIX/ngx_http_lifecycle_module.so"; then
        say "the module was rebuilt: restarting nginx"
        stop_one nginx "$NGINX_PID" nginx QUIT
        n=
    fi
    if [ -n "$g" ] && [ -f "$AGENT" ] &&
       ! cmp -s "$AGENT" "$PREFIX/lifecycle-agent"; then
        say "the agent was rebuilt: restarting it"
        stop_one lifecycle-agent "$AGENT_PID" lifecycle-agent TERM
        g=
    fi
    if [ -n "$n" ] && [ -n "$r" ] && [ -n "$g" ]; then
        say "already running (nginx pid $n, Redis pid $r, agent pid $g)"
        show_urls
        return
    fi
    # everything that can fail early, before anything is started
    if [ -z "$n" ]; then
        [ -x "$NGINX" ] || die "$NGINX not found: run make demo (installs nginx-core)"
        [ -f "$MODULE" ] || die "module $(rel "$MODULE") not built: run make demo"
        port_in_use "$PORT" &&
            die "port $PORT is in use by another program: set DEMO_PORT"
    fi
    if [ -z "$r" ]; then
        command -v redis-server >/dev/null ||
            die "redis-server not found: run make demo (installs it)"
        port_in_use "$REDIS_PORT" &&
            die "port $REDIS_PORT is in use by another program: set DEMO_REDIS_PORT"
    fi
    if [ -z "$g" ]; then
        [ -x "$AGENT" ] || die "agent $(rel "$AGENT") not built: run make demo"
    fi
    mkdir -p "$PREFIX"
    start_redis
    start_nginx
    start_agent
    show_urls
}

cmd_stop() {
    # TERM: the agent finishes the message in hand; QUIT: nginx finishes
    # the requests in flight; TERM: Redis saves, exits.
    stop_one lifecycle-agent "$AGENT_PID" lifecycle-agent TERM
    stop_one nginx "$NGINX_PID" nginx QUIT
    stop_one Redis "$REDIS_PID" redis-server TERM
}

cmd_status() {
    local rc=0 pid
    if pid=$(running_pid "$NGINX_PID" nginx); then
        say "nginx running, pid $pid, http://127.0.0.1:$PORT/"
    else
        say "nginx not running"; rc=3
    fi
    if pid=$(running_pid "$REDIS_PID" redis-server); then
        say "Redis running, pid $pid, redis-cli -p $REDIS_PORT"
    else
        say "Redis not running"; rc=3
    fi
    if pid=$(running_pid "$AGENT_PID" lifecycle-agent); then
        say "lifecycle-agent running, pid $pid, outbox $(rel "$OUTBOX")"
    else
        say "lifecycle-agent not running"; rc=3
    fi
    return $rc
}

case "${1:-}" in
    start)  cmd_start ;;
    stop)   cmd_stop ;;
    status) cmd_status ;;
    *)      echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
