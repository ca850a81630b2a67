#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo start for real:
# nginx, php-fpm and the php CLI; Apache, lighttpd, Caddy and cgi-fcgi for
# the front-end tests. With "bench", also what `make bench` runs: wrk,
# haproxy and nginx's stream module (the relays bench/e2e.sh measures
# against) and strace. Does nothing when they are already there.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
compgen -G '/usr/sbin/php-fpm*' >/dev/null || need+=(php-fpm)
command -v php >/dev/null 2>&1 || need+=(php-cli)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
[ -x /usr/sbin/apache2 ] || need+=(apache2-bin)
[ -x /usr/sbin/lighttpd ] || need+=(lighttpd)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v cgi-fcgi >/dev/null 2>&1 || need+=(libfcgi-bin)
if [ "${1:-}" = bench ]; then
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
  [ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
  command -v strace >/dev/null 2>&1 || need+=(strace)
fi
if ((${#need[@]} == 0)); then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
echo "installing: ${need[*]}"
# The lighttpd and caddy packages start their service on port 80 when
# installed. Tests start their own servers on free ports; forbid service
# starts during the install, unless the machine already has a policy.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# installed by incpathd scripts/install-deps.sh for one apt-get run\nexit 101\n' |
    $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod 755 /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
