#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo start for real.
# Does nothing when they are already there.
#
#   ./scripts/install-deps.sh        everything the tests need: nginx,
#                                    php-fpm and the php CLI; Apache,
#                                    lighttpd, Caddy and cgi-fcgi for the
#                                    front-end tests, promtool (package
#                                    prometheus) for the alerting rules
#                                    (.ci/run)
#   ./scripts/install-deps.sh demo   what scripts/demo.sh needs: nginx,
#                                    php-fpm and curl (make demo)
#   ./scripts/install-deps.sh bench  the test set, and what make bench runs:
#                                    wrk, haproxy and nginx's stream module
#                                    (the relays bench/e2e.sh measures
#                                    against) and strace
set -euo pipefail
usage="usage: $0 [demo|bench]: no argument installs what the tests need, demo only what make demo needs, bench the test set and the bench tools"
set=${1:-all}
if (($# > 1)) || [[ $set != all && $set != demo && $set != bench ]]; then
  echo "$usage" >&2
  exit 2
fi
# nginx and php-fpm live in sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/usr/local/sbin:/sbin
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
compgen -G '/usr/sbin/php-fpm*' >/dev/null || need+=(php-fpm)
if [ "$set" = demo ]; then
  command -v curl >/dev/null 2>&1 || need+=(curl)
else
  command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
  command -v php >/dev/null 2>&1 || need+=(php-cli)
  [ -x /usr/sbin/apache2 ] || need+=(apache2-bin)
  [ -x /usr/sbin/lighttpd ] || need+=(lighttpd)
  command -v caddy >/dev/null 2>&1 || need+=(caddy)
  command -v cgi-fcgi >/dev/null 2>&1 || need+=(libfcgi-bin)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  if [ "$set" = bench ]; then
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
    [ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
    command -v strace >/dev/null 2>&1 || need+=(strace)
  fi
fi
if ((${#need[@]} == 0)); then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
echo "installing: ${need[*]}"
# apt and dpkg talk a lot, on stderr too; their words are shown only when
# they fail.
log=$(mktemp)
own_policy=''
finish() {
  if [ -n "$own_policy" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
  rm -f "$log"
}
trap finish EXIT
# The lighttpd and caddy packages start their service on port 80 when
# installed, and nginx's and php-fpm's start theirs too. Tests and the demo
# start their own servers; forbid service starts during the install, unless
# the machine already has a policy.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  own_policy=1
  printf '#!/bin/sh\n# installed by incpathd scripts/install-deps.sh for one apt-get run\nexit 101\n' |
    $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod 755 /usr/sbin/policy-rc.d
fi
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
  --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-deps.sh: installing ${need[*]} failed" >&2
  exit 1
fi
