#!/usr/bin/env bash
# A two-release site on loopback: nginx → incpathd → php-fpm. Shows a page
# pinned to release A, flips `current` to B, and shows every path the page
# saw move to B together. Everything lives in a temporary directory and is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

go build -o bin/incpathd ./cmd/incpathd
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# free_port prints a loopback port nobody listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1; logs in $tmp" >&2
  exit 1
}

site=$tmp/site
for r in A B; do
  mkdir -p "$site/releases/$r"
  cp -r testdata/site/. "$site/releases/$r/"
  echo "$r" >"$site/releases/$r/release.txt"
done
ln -s releases/A "$site/current"

fpm_port=$(free_port); proxy_port=$(free_port); web_port=$(free_port)
asroot=(); user_line=""
if [ "$(id -u)" = 0 ]; then asroot=(-R); user_line="user root;"; fi

fpm=$(compgen -G '/usr/sbin/php-fpm*' | sort | tail -n 1)
cat >"$tmp/php.ini" <<INI
opcache.enable=1
zend_extension=opcache.so
INI
cat >"$tmp/fpm.conf" <<CONF
[global]
error_log = $tmp/fpm.log
daemonize = no
[demo]
listen = 127.0.0.1:$fpm_port
pm = static
pm.max_children = 4
clear_env = no
catch_workers_output = yes
$( [ "$(id -u)" = 0 ] && echo "user = root" )
CONF
PHP_INI_SCAN_DIR= "$fpm" -F "${asroot[@]}" -y "$tmp/fpm.conf" -c "$tmp/php.ini" >"$tmp/fpm.out" 2>&1 &
pids+=($!)
wait_port "$fpm_port"

bin/incpathd --listen "127.0.0.1:$proxy_port" --upstream "127.0.0.1:$fpm_port" \
  --max-conns 4 \
  --search-replace-pattern "$site/current" \
  --include-path ".:$site/current/include:/usr/share/php" >"$tmp/incpathd.log" 2>&1 &
pids+=($!)
wait_port "$proxy_port"

mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<CONF
$user_line
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $tmp/nginx;
  fastcgi_temp_path $tmp/nginx;
  upstream incpathd { server 127.0.0.1:$proxy_port; keepalive 8; }
  server {
    listen 127.0.0.1:$web_port;
    root $site/current;
    location ~ [^/]\.php(/|\$) {
      fastcgi_split_path_info ^(.+?\.php)(/.*)\$;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_param PATH_INFO \$fastcgi_path_info;
      fastcgi_keep_conn on;
      fastcgi_pass incpathd;
    }
  }
}
CONF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g 'daemon off;' 2>"$tmp/nginx/stderr" &
pids+=($!)
wait_port "$web_port"

show() {
  curl -fsS "http://127.0.0.1:$web_port/index.php" | php -r '
    $r = json_decode(stream_get_contents(STDIN), true);
    printf("  script release      %s\n  include_path include %s\n  DOCUMENT_ROOT        %s\n  SCRIPT_FILENAME      %s\n  include_path         %s\n",
      $r["release"], $r["include_release"], $r["document_root"], $r["script_filename"], $r["include_path"]);'
}

echo "nginx on http://127.0.0.1:$web_port → incpathd on 127.0.0.1:$proxy_port → php-fpm on 127.0.0.1:$fpm_port"
echo "site: $site/current -> $(readlink "$site/current")"
echo
echo "request 1:"
show
echo
echo "incpathd activate $site/releases/B --link $site/current"
bin/incpathd activate "$site/releases/B" --link "$site/current"
sleep 0.2 # incpathd watches the link (inotify): the flip is seen at once
echo
echo "request 2:"
show
echo
echo "Every path PHP saw moved from A to B together, opcache on."
