#!/usr/bin/env bash
# Checks (and, as root, installs) the Debian packages lifecycle needs.
#
#   scripts/deps.sh test    build + Redis + what the test suite uses (with
#                           node, npm and chromium for lifecycle.js)
#   scripts/deps.sh demo    build + Redis + curl for the walk-through
#   scripts/deps.sh bench   build + Redis + what ../shared/bench/run.sh runs
#
# Nothing to do (everything installed): exits 0 at once, silently.
# Missing packages, run as root: apt-get installs them (apt-get update first
# only when the package lists cannot provide them), without starting
# Debian's own nginx or Redis services: lifecycle uses private instances on
# its own ports, never the system ones.
# Missing packages, not root: prints the exact command to run and exits 1.
set -euo pipefail

usage() { echo "usage: $0 test|demo|bench" >&2; exit 2; }
[ $# -eq 1 ] || usage

# The module is built against Debian's nginx sources (nginx-dev) with
# Debian's configure flags, and loaded into Debian's nginx (nginx-core).
# lifecycle-agent: hiredis, libcurl (SMTP, HTTP), jansson (JSON), OpenSSL.
build_pkgs="nginx-core nginx-dev libhiredis-dev libpcre2-dev libmaxminddb-dev
            libssl-dev zlib1g-dev gcc make libcurl4-openssl-dev libjansson-dev"
# redis-server pulls in redis-tools (redis-cli).
run_pkgs="redis-server"
# t/ is Perl: core modules (Test::More, prove, Digest::SHA, ...), the
# MaxMind DB writer for the databases t/16-geo.t builds, and for the
# agent's tests a real SMTP server (aiosmtpd) and JSON::PP (core).
test_pkgs="perl curl openssl gcc valgrind libmaxmind-db-writer-perl
           python3-aiosmtpd"
# lifecycle.js: esbuild and playwright-core come from npm (js/package.json,
# "npm ci"); the browser is Debian's chromium (t/31-browser.t). node and
# npm count as there when their commands are (Node 20 from another source
# often brings npm inside its own nodejs package).
browser_pkgs="chromium"
node_pkgs=""
command -v node >/dev/null 2>&1 || node_pkgs="nodejs"
command -v npm >/dev/null 2>&1 || node_pkgs="$node_pkgs npm"

case "$1" in
    test) wanted="$build_pkgs $run_pkgs $test_pkgs $browser_pkgs $node_pkgs" ;;
    demo) wanted="$build_pkgs $run_pkgs curl" ;;
    # the harness's peers: nginx's Lua module and lua-resty-redis, and wrk
    bench) wanted="$build_pkgs $run_pkgs perl libnginx-mod-http-lua
                  libnginx-mod-http-ndk lua-nginx-redis wrk" ;;
    *) usage ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: dpkg-query not found: lifecycle targets Debian 12 (bookworm)." >&2
    echo "Install the equivalents of: $wanted" >&2
    exit 1
fi

# One dpkg-query for all of them (fast no-op when everything is there).
# shellcheck disable=SC2086  # $wanted: a word list, split on purpose
installed=" $({ dpkg-query -W -f='${Package} ${db:Status-Status}\n' $wanted 2>/dev/null || true; } |
              awk '$2 == "installed" {print $1}' | tr '\n' ' ') "
missing=()
for p in $wanted; do
    case "$installed" in *" $p "*) ;; *) missing+=("$p") ;; esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

install_cmd="apt-get install -y --no-install-recommends ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
    echo "lifecycle needs these Debian packages, not installed: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "" >&2
    echo "    sudo apt-get update && sudo $install_cmd" >&2
    echo "" >&2
    echo "then run the same command again." >&2
    exit 1
fi

echo "deps.sh: installing missing Debian packages: ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive

# Keep the package scripts from starting the system nginx (port 80) and
# redis-server (port 6379): invoke-rc.d and deb-systemd-invoke both honour
# policy-rc.d exit code 101 ("action forbidden"). An existing policy-rc.d
# (containers usually ship one) is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from lifecycle scripts/deps.sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

# apt-get update only when some missing package has no install candidate
# (empty or outdated package lists, e.g. a fresh container).
need_update=0
for p in "${missing[@]}"; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
        need_update=1
        break
    fi
done
if [ $need_update -eq 1 ]; then
    echo "+ apt-get update"
    apt-get update </dev/null
fi

echo "+ $install_cmd"
if ! apt-get install -y --no-install-recommends "${missing[@]}" </dev/null; then
    if [ $need_update -eq 0 ]; then
        # Lists present but stale (a 404 on a superseded version): refresh once.
        echo "+ apt-get update"
        apt-get update </dev/null
        echo "+ $install_cmd"
        apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
    else
        exit 1
    fi
fi
