#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo start for real:
# nginx, php-fpm and the php CLI. Does nothing when they are already there.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
compgen -G '/usr/sbin/php-fpm*' >/dev/null || need+=(php-fpm)
command -v php >/dev/null 2>&1 || need+=(php-cli)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
if ((${#need[@]} == 0)); then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
echo "installing: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
