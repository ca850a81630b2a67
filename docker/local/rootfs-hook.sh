#!/bin/sh
# mmdebstrap --customize-hook for scripts/compose-test.sh: turns a Debian
# bookworm root file system with nginx-light and php-fpm into one that the
# stand-ins for the official php:8.2-fpm and nginx images can be made from
# (docker import, then a CMD each). Only what docker/compose.yaml relies on
# is copied from the official images' layout:
# - php-fpm reads /usr/local/etc/php-fpm.d/*.conf in name order, runs in the
#   foreground, logs to stderr, keeps the environment, listens on 9000 until
#   a later file says otherwise (zz-incpathd.conf does);
# - nginx reads /etc/nginx/conf.d/*.conf, serves no default site of its own
#   (Debian's sites-enabled/default would take port 80 first) and logs to
#   stdout and stderr.
# $1 is the root file system, as mmdebstrap passes it.
set -eu
root=$1

# php-fpm
fpm=$root/usr/local/etc/php-fpm.d
mkdir -p "$fpm" "$root/usr/local/sbin" "$root/var/www/html"
ln -sf /usr/sbin/php-fpm8.2 "$root/usr/local/sbin/php-fpm"
rm -f "$root/etc/php/8.2/fpm/pool.d/www.conf"
cat >"$root/etc/php/8.2/fpm/php-fpm.conf" <<'CONF'
[global]
include = /usr/local/etc/php-fpm.d/*.conf
CONF
cat >"$fpm/www.conf" <<'CONF'
[www]
user = www-data
group = www-data
listen = 127.0.0.1:9000
pm = dynamic
pm.max_children = 5
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
CONF
cat >"$fpm/docker.conf" <<'CONF'
[global]
error_log = /proc/self/fd/2
log_limit = 8192

[www]
; php-fpm closes stdout at start: the access log goes to stderr too.
access.log = /proc/self/fd/2
clear_env = no
catch_workers_output = yes
decorate_workers_output = no
CONF
cat >"$fpm/zz-docker.conf" <<'CONF'
[global]
daemonize = no

[www]
listen = 9000
CONF

# nginx
rm -f "$root/etc/nginx/sites-enabled/default"
ln -sf /dev/stdout "$root/var/log/nginx/access.log"
ln -sf /dev/stderr "$root/var/log/nginx/error.log"

# Smaller images: no package lists or documentation.
rm -rf "$root/var/lib/apt/lists/"* "$root/usr/share/doc/"* "$root/usr/share/man/"*
