#!/usr/bin/env bash
# make demo: the request that crosses a flip. A two-release site behind two
# chains at once, nginx with $realpath_root straight to php-fpm (the usual
# recipe) and nginx -> incpathd -> php-fpm. scripts/demo/slow.php includes a
# file, sleeps, and includes another; it starts on release A through both
# chains, `current` flips to B while it sleeps, and the demo prints which
# release each include came from, next to a request started after the flip.
# Then `incpathd drain` waits for A's last request and A is deleted.
#
# Everything runs from a temporary directory over unix sockets (no port to
# collide with) and is stopped, and the directory removed, on exit and on
# Ctrl-C. INCPATHD=/path/to/incpathd skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian installs nginx and php-fpm in sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/usr/local/sbin:/sbin

die() {
  echo "demo: $*" >&2
  exit 1
}

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-dumb}" != dumb ]; then
  red=$'\e[31m' green=$'\e[32m' bold=$'\e[1m' off=$'\e[0m'
else
  red='' green='' bold='' off=''
fi

# find_fpm prints the php-fpm binary: php-fpm8.2 and the like, in the
# first directory of PATH that has one, the highest version there.
find_fpm() {
  local dir found
  local IFS=:
  for dir in $PATH; do
    found=$(compgen -G "${dir:-.}/php-fpm*" | sort -V | tail -n 1) && [ -x "$found" ] && {
      echo "$found"
      return
    }
  done
  return 1
}
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
fpm=$(find_fpm) || missing+=(php-fpm)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  die "missing ${missing[*]}: run ./scripts/install-deps.sh demo (make demo does)"
fi

bin=${INCPATHD:-}
if [ -z "$bin" ]; then
  command -v go >/dev/null || die "no go command to build incpathd; install Go 1.26 or set INCPATHD"
  echo "go build -o bin/incpathd ./cmd/incpathd"
  out=$(go build -o bin/incpathd ./cmd/incpathd 2>&1) || die "go build ./cmd/incpathd failed:
$out"
  bin=bin/incpathd
fi
[ -x "$bin" ] || die "INCPATHD=$bin is not an executable"
bin=$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")

# cleanup stops what the demo started, the jobs of this shell: php-fpm and
# nginx stop their workers on SIGTERM before they exit; whatever still runs
# after 5 s is killed. Then it removes the temporary directory.
tmp=''
cleanup() {
  trap - EXIT INT TERM HUP
  local _
  kill -TERM $(jobs -pr) 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(jobs -pr)" ] && break
    sleep 0.1
  done
  kill -KILL $(jobs -pr) 2>/dev/null || true
  wait 2>/dev/null || true
  [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
# On a signal: clean up, then die of the same signal, so that make (or a
# calling shell) sees the interruption.
for sig in INT TERM HUP; do
  trap "cleanup; trap - $sig; kill -$sig \$\$" "$sig"
done

# Physical paths throughout, so that the paths incpathd reports are the
# ones this script compares with.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/incpathd-demo.XXXXXX")
tmp=$(cd "$tmp" && pwd -P)

# A unix socket path holds at most 107 bytes.
((${#tmp} < 80)) || die "temporary directory $tmp is too long for unix sockets; set TMPDIR=/tmp"

site=$tmp/site
for r in A B; do
  mkdir -p "$site/releases/$r"
  cp -r scripts/demo/. "$site/releases/$r/"
done
ln -s releases/A "$site/current"
mkdir "$tmp/php" "$tmp/nginx"

t0=${EPOCHREALTIME//[.,]/}
# event TEXT prints TEXT after the time since the slow requests started.
event() {
  local us=$((${EPOCHREALTIME//[.,]/} - t0))
  printf '  %2d.%02d s  %s\n' $((us / 1000000)) $((us / 10000 % 100)) "$1"
}

# wait_for NAME PID LOG COMMAND...: until COMMAND succeeds, 30 s at most (a
# loaded machine), while process PID (NAME) runs; else shows the end of LOG
# and fails.
wait_for() {
  local name=$1 pid=$2 log=$3 _
  shift 3
  for _ in $(seq 600); do
    "$@" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      die "$name exited; the end of $log:
$(tail -n 20 "$log" 2>/dev/null)"
    fi
    sleep 0.05
  done
  die "$name: still no $* after 30 s; the end of $log:
$(tail -n 20 "$log" 2>/dev/null)"
}
sockets() {
  local s
  for s; do [ -S "$s" ] || return 1; done
}

# php-fpm with opcache on, one pool per chain. PHP's realpath cache is off,
# so that the usual recipe fails the same way on every run: with it on (ttl
# 120 s by default) the slow request's late include finds `current` -> A in
# the worker's cache and comes from A, and a request after the flip that
# lands on a worker with such an entry gets B's script and A's includes
# (README, Try it). incpathd pins
# include_path to the release either way.
asroot=() user=''
if [ "$(id -u)" = 0 ]; then asroot=(-R) user='user = root'; fi
cat >"$tmp/php.ini" <<INI
zend_extension = opcache.so
opcache.enable = 1
realpath_cache_size = 0
sys_temp_dir = "$tmp/php"
log_errors = On
display_errors = Off
INI
cat >"$tmp/php-fpm.conf" <<CONF
[global]
error_log = $tmp/php-fpm.log
daemonize = no
[direct]
listen = $tmp/fpm-direct.sock
pm = static
pm.max_children = 2
$user
[incpathd]
listen = $tmp/fpm-incpathd.sock
pm = static
pm.max_children = 2
$user
CONF
PHP_INI_SCAN_DIR='' "$fpm" -F "${asroot[@]}" -y "$tmp/php-fpm.conf" -c "$tmp/php.ini" >>"$tmp/php-fpm.log" 2>&1 &
wait_for php-fpm "$!" "$tmp/php-fpm.log" sockets "$tmp/fpm-direct.sock" "$tmp/fpm-incpathd.sock"

# --max-conns stays at the pool's pm.max_children.
"$bin" --listen "unix:$tmp/incpathd.sock" --upstream "unix:$tmp/fpm-incpathd.sock" --max-conns 2 \
  --control "unix:$tmp/control.sock" --shutdown-timeout 2s >"$tmp/incpathd.log" 2>&1 &
incpathd_pid=$!
wait_for incpathd "$incpathd_pid" "$tmp/incpathd.log" sockets "$tmp/incpathd.sock" "$tmp/control.sock"

# Both servers send the same include_path through `current`; they differ
# in the docroot ($realpath_root against $document_root) and the upstream.
user=''
if [ "$(id -u)" = 0 ]; then user='user root;'; fi
cat >"$tmp/nginx.conf" <<CONF
$user
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  proxy_temp_path $tmp/nginx/proxy;
  scgi_temp_path $tmp/nginx/scgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  # The usual recipe: nginx resolves the docroot itself.
  server {
    listen unix:$tmp/web-direct.sock;
    root $site/current;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$realpath_root\$fastcgi_script_name;
      fastcgi_param DOCUMENT_ROOT \$realpath_root;
      fastcgi_param PHP_VALUE "include_path=.:$site/current/lib";
      fastcgi_pass unix:$tmp/fpm-direct.sock;
    }
  }
  # Through incpathd, which resolves the docroot and pins include_path.
  upstream incpathd { server unix:$tmp/incpathd.sock; keepalive 2; }
  server {
    listen unix:$tmp/web-incpathd.sock;
    root $site/current;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_param PHP_VALUE "include_path=.:$site/current/lib";
      fastcgi_keep_conn on;
      fastcgi_pass incpathd;
    }
  }
}
CONF
nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx.conf" -g 'daemon off;' >"$tmp/nginx/stderr" 2>&1 &
wait_for nginx "$!" "$tmp/nginx/stderr" sockets "$tmp/web-direct.sock" "$tmp/web-incpathd.sock"

# get CHAIN PATH prints the body of GET PATH through CHAIN (direct or
# incpathd), or fails with curl's message.
get() {
  curl -fsS --max-time 60 --unix-socket "$tmp/web-$1.sock" "http://demo$2"
}

echo "${bold}incpathd demo: the request that crosses a release flip${off}"
echo "  slow.php  includes first.php, sleeps, includes second.php, both through include_path"
echo "            .../current/lib; prints the release of each"
echo "  php-fpm   opcache on; realpath cache off (on, the mix moves to requests after the flip)"
echo

# 1. The slow request, through each chain; it has included first.php once
#    its wait file exists.
t0=${EPOCHREALTIME//[.,]/}
slow_pids=()
for c in direct incpathd; do
  curl -fsS --max-time 60 --unix-socket "$tmp/web-$c.sock" "http://demo/slow.php?wait=$c" >"$tmp/slow-$c.out" 2>&1 &
  slow_pids+=($!)
done
wait_for "slow.php through nginx" "${slow_pids[0]}" "$tmp/slow-direct.out" test -e "$tmp/php/direct"
wait_for "slow.php through incpathd" "${slow_pids[1]}" "$tmp/slow-incpathd.out" test -e "$tmp/php/incpathd"
event "slow.php starts on A through both chains, includes first.php, sleeps"

# 2. The flip. incpathd sees it through inotify, well under a millisecond
#    later; the demo waits until incpathd says so (GET /releases on the
#    control socket), so that the next request is sure to be B's.
"$bin" activate "$site/releases/B" --link "$site/current" >"$tmp/activate.out" 2>&1 ||
  die "incpathd activate failed: $(cat "$tmp/activate.out")"
event "incpathd activate releases/B: current -> $(readlink "$site/current")"
flipped() {
  local st
  st=$(curl -fsS --max-time 5 --unix-socket "$tmp/control.sock" http://incpathd/releases) &&
    [[ $st != *"\"cached\":\"$site/releases/A\""* ]]
}
wait_for incpathd "$incpathd_pid" "$tmp/incpathd.log" flipped

# 3. A request started after the flip, through each chain.
after_direct=$(get direct /slow.php) || die "slow.php through nginx after the flip failed"
after_incpathd=$(get incpathd /slow.php) || die "slow.php through incpathd after the flip failed"
event "slow.php again through both chains, started after the flip"

# 4. drain A while A's request is still in flight.
"$bin" drain "$site/releases/A" --control "unix:$tmp/control.sock" --timeout 60s --interval 50ms \
  >"$tmp/drain.log" 2>&1 &
drain_pid=$!
wait_for "incpathd drain" "$drain_pid" "$tmp/drain.log" grep -qs 'waiting for' "$tmp/drain.log"
line=$(grep -m1 'waiting for' "$tmp/drain.log")
event "${line//$site\//}"

# 5. The sleeping requests wake up and include second.php.
rm -f "$tmp/php/direct" "$tmp/php/incpathd"
for i in 0 1; do
  wait "${slow_pids[$i]}" || true
done
slow_direct=$(cat "$tmp/slow-direct.out")
slow_incpathd=$(cat "$tmp/slow-incpathd.out")
event "the slow requests wake up, include second.php and answer"

# 6. drain returns once A's request is done; A can go.
drained=0
wait "$drain_pid" || drained=$?
if ((drained == 0)); then
  event "incpathd drain returned 0: releases/A is drained"
  rm -rf "$site/releases/A"
  after_rm=$(get incpathd /slow.php 2>&1) || true
  event "rm -rf releases/A"
else
  line=$(tail -n 1 "$tmp/drain.log")
  event "${red}incpathd drain exited $drained${off}: ${line//$site\//}"
fi
echo

# row LABEL BODY [WANT] prints the three releases in BODY ("A A B") and
# whether they agree; a BODY other than WANT fails the demo.
failed=0
row() {
  local label=$1 script first second extra verdict
  read -r script first second extra <<<"$2" || true
  if [ -z "$second" ] || [ -n "$extra" ]; then
    verdict="${red}no answer: $2${off}"
  elif [ "$script" = "$first" ] && [ "$first" = "$second" ]; then
    verdict="${green}one release${off}"
  else
    verdict="${red}MIXED${off}"
  fi
  if [ -n "${3:-}" ] && [ "$2" != "$3" ]; then failed=1; fi
  printf '    %-28s %-8s %-11s %-11s %s\n' "$label" "$script" "$first" "$second" "$verdict"
}
printf '    %-28s %-8s %-11s %s\n' '' script first.php second.php
echo "  nginx \$realpath_root -> php-fpm"
row "started before the flip" "$slow_direct"
row "started after the flip" "$after_direct"
echo "  nginx -> incpathd -> php-fpm"
row "started before the flip" "$slow_incpathd" "A A A"
row "started after the flip" "$after_incpathd" "B B B"
if ((drained == 0)); then
  row "after rm -rf releases/A" "$after_rm" "B B B"
fi
if ((drained != 0 || failed)); then
  echo >&2
  die "incpathd did not keep each request on its release or did not drain A; the end of its log:
$(tail -n 20 "$tmp/incpathd.log")"
fi
echo
case $slow_direct in
"A A B" | "A B B") echo "Without incpathd the request in flight answered with code from both releases." ;;
esac
echo "Through incpathd each request ran in the release it started in; A was deleted once drained."
