#!/usr/bin/env bash
# php-upgrade.sh: restart or upgrade php-fpm behind incpathd without a
# failed request, blue/green.
#
# incpathd runs with two pools, each its own php-fpm on its own socket:
#   incpathd --upstream blue=unix:/run/php/blue.sock \
#            --upstream green=unix:/run/php/green.sock \
#            --control unix:/run/incpathd/control.sock ...
# New requests go to one of them, the active one. This script:
#   1. finds the active pool and takes the other one, the idle one;
#   2. starts the idle pool ($START: with the new php.ini, extension or PHP
#      version), waits until it answers;
#   3. `incpathd upstream use IDLE --wait`: new requests go to it, and the
#      command returns once no request is left on the old pool;
#   4. stops the old pool ($STOP).
# If the new pool does not start or does not answer, the old one stays
# active and nothing is stopped.
#
# Usage: php-upgrade.sh [POOL]
#   POOL  the pool to switch to (default: the one that is not active)
#
# Environment:
#   INCPATHD          the incpathd binary (default: incpathd in PATH)
#   INCPATHD_CONTROL  the daemon's --control endpoint (required)
#   START             command that starts a pool, its name appended
#                     (default: systemctl restart php-fpm-pool@)
#   STOP              command that stops a pool, its name appended
#                     (default: systemctl stop php-fpm-pool@)
#   WAIT_TIMEOUT      how long requests on the old pool may take to finish
#                     (default 5m); after it the old pool is left running
#                     and the script fails
#   READY_TIMEOUT     seconds the new pool may take to answer once started
#                     (default 30)
#
# With the units of deploy/systemd (php-fpm-pool@.service), START and STOP
# need not be set: `systemctl restart php-fpm-pool@green` is step 2.
set -euo pipefail

prog=${0##*/}
die() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 1
}

incpathd=${INCPATHD:-incpathd}
start=${START:-systemctl restart php-fpm-pool@}
stop=${STOP:-systemctl stop php-fpm-pool@}
wait_timeout=${WAIT_TIMEOUT:-5m}
ready_timeout=${READY_TIMEOUT:-30}
[ -n "${INCPATHD_CONTROL:-}" ] || die "set INCPATHD_CONTROL to the daemon's --control endpoint"
[ $# -le 1 ] || die "usage: $prog [POOL]"
export INCPATHD_CONTROL

# The pools, one per line: NAME ACTIVE(*|-).
pools=$("$incpathd" upstream status --json | awk '
  /"name":/                  { gsub(/[",]/, "", $2); name = $2 }
  /"active": (true|false),?$/ { print name, ($2 ~ /^true/ ? "*" : "-") }')
[ -n "$pools" ] || die "incpathd reports no pool"
active=$(awk '$2 == "*" { print $1 }' <<<"$pools")
if [ $# -eq 1 ]; then
  next=$1
  grep -qx "$next [*-]" <<<"$pools" || die "no pool $next; the pools are: $(awk '{ printf "%s ", $1 }' <<<"$pools")"
else
  others=$(awk '$2 == "-" { print $1 }' <<<"$pools")
  [ "$(wc -l <<<"$others")" -eq 1 ] && [ -n "$others" ] ||
    die "name the pool to switch to: the pools are $(awk '{ printf "%s ", $1 }' <<<"$pools")"
  next=$others
fi
[ "$next" != "$active" ] || die "$next is already active; to restart it, switch to another pool first"

echo "$prog: starting $next (active: $active)"
$start"$next" || die "cannot start $next; $active stays active"

# `use` refuses a pool that does not answer; php-fpm may take a moment
# after its start command returns.
deadline=$((SECONDS + ready_timeout))
until out=$("$incpathd" upstream use "$next" --wait --timeout "$wait_timeout" 2>&1); do
  case $out in
  *"does not answer"*)
    [ "$SECONDS" -lt "$deadline" ] || die "$next does not answer after ${ready_timeout}s; $active stays active: $out"
    sleep 0.2
    ;;
  *) die "$out (nothing stopped)" ;;
  esac
done
printf '%s\n' "$out"

echo "$prog: stopping $active"
$stop"$active" || die "cannot stop $active"
echo "$prog: $next serves; $active is stopped"
