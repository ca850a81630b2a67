#!/usr/bin/env bash
# Real nginx and php-fpm with a hello-world PHP page, driven by wrk:
# nginx → php-fpm directly (the usual $realpath_root recipe) against
# nginx → incpathd → php-fpm, measured alternately in the same run.
#
#   bench/e2e.sh                      # 5 rounds of 10 s, 8 connections
#   ROUNDS=3 SECONDS_EACH=5 CONNS=1 bench/e2e.sh
#   INCPATHD_PROCS=2 SOCKETS=unix PIN=1 bench/e2e.sh
#
# Each round measures both set-ups one after the other (the order alternates
# between rounds, so a change in the machine's load hits both alike) and
# prints requests/s, their ratio, the p50 latencies (wrk --latency) and the
# CPU incpathd used per request. At the end: the median ratio and the median
# p50 added by incpathd.
#
# Both set-ups keep connections alive on every hop: wrk to nginx, nginx to
# its upstream (keepalive + fastcgi_keep_conn), incpathd to php-fpm. Each
# has its own php-fpm pool of WORKERS (default 8) static workers (opcache
# on), so neither holds the other's workers; incpathd gets --max-conns
# WORKERS. With CONNS at most WORKERS no request queues for a worker, and the
# p50s compare the hops, not two queueing disciplines. The direct server
# pins with $realpath_root as the nginx documentation suggests; the other
# sends the symlinked $document_root for incpathd to resolve (cached and
# watched, the default flags) and an include_path to pin. incpathd runs with
# GOMAXPROCS=INCPATHD_PROCS (default 1, as the README advises) and
# GODEBUG=INCPATHD_GODEBUG (default none; see the README); FastCGI goes
# over loopback TCP, or unix sockets with SOCKETS=unix; INCPATHD=path runs
# that binary instead of building one.
#
# PIN=1 pins wrk to CPU 0 and the servers to the other CPUs (taskset), so
# the load generator does not compete with what it measures; PIN=0 (the
# default) lets the scheduler place everything, which on a two-core machine
# measures better for both set-ups. Everything listens on loopback ports
# that were free, lives in a temporary directory and is stopped on exit.
source "$(dirname "$0")/lib.sh"

rounds=${ROUNDS:-5}
secs=${SECONDS_EACH:-10}
conns=${CONNS:-8}
workers=${WORKERS:-8}
pin=${PIN:-0}
sockets=${SOCKETS:-tcp}

for b in nginx wrk; do
  if ! command -v "$b" >/dev/null; then
    echo "$b is missing: apt-get install nginx-light wrk (or run scripts/install-deps.sh)" >&2
    exit 1
  fi
done
fpm_bin=$(compgen -G '/usr/sbin/php-fpm*' | sort | tail -n 1 || true)
if [ -z "$fpm_bin" ]; then
  echo "php-fpm is missing: apt-get install php-fpm" >&2
  exit 1
fi

ncpu=$(nproc)
wrk_cpus=() srv_cpus=()
if [ "$pin" = 1 ] && [ "$ncpu" -ge 2 ]; then
  wrk_cpus=(taskset -c 0)
  srv_cpus=(taskset -c 1-$((ncpu - 1)))
fi

build
incpathd=${INCPATHD:-$tmp/bin/incpathd}
make_site
site=$tmp/site
printf '<?php\necho "Hello, world!\\n";\n' >"$site/releases/A/hello.php"

as_root=() user_line="" fpm_user=""
if [ "$(id -u)" = 0 ]; then as_root=(-R) user_line="user root;" fpm_user="user = root"; fi

# FastCGI addresses: loopback TCP ports, or unix sockets with SOCKETS=unix.
# fcgi_addr NAME prints one in incpathd's notation; nginx_addr turns it into
# nginx's, php-fpm takes the part after "unix:" or the host:port.
fcgi_addr() {
  if [ "$sockets" = unix ]; then echo "unix:$tmp/$1.sock"; else echo "127.0.0.1:$(free_port)"; fi
}
fpm_listen() { echo "${1#unix:}"; }
# wait_fcgi ADDR waits for a TCP port or a unix socket.
wait_fcgi() {
  local _
  case $1 in
  unix:*)
    for _ in $(seq 200); do
      [ -S "${1#unix:}" ] && return 0
      sleep 0.05
    done
    fail "no socket at ${1#unix:}"
    ;;
  *) wait_port "${1##*:}" ;;
  esac
}
fpm_direct=$(fcgi_addr fpm-direct) fpm_proxy=$(fcgi_addr fpm-proxy)
cat >"$tmp/php.ini" <<INI
zend_extension=opcache.so
opcache.enable=1
INI
pool() {
  cat <<CONF
[$1]
listen = $(fpm_listen "$2")
pm = static
pm.max_children = $workers
$fpm_user
CONF
}
{
  printf '[global]\nerror_log = %s\ndaemonize = no\n' "$tmp/fpm.log"
  pool direct "$fpm_direct"
  pool proxy "$fpm_proxy"
} >"$tmp/fpm.conf"
PHP_INI_SCAN_DIR='' start "$tmp/fpm.out" "${srv_cpus[@]}" "$fpm_bin" -F "${as_root[@]}" -y "$tmp/fpm.conf" -c "$tmp/php.ini"
wait_fcgi "$fpm_direct"
wait_fcgi "$fpm_proxy"

px=$(fcgi_addr incpathd)
GODEBUG=${INCPATHD_GODEBUG:-} GOMAXPROCS=${INCPATHD_PROCS:-1} start "$tmp/incpathd.log" "${srv_cpus[@]}" "$incpathd" --listen "$px" \
  --upstream "$fpm_proxy" --max-conns "$workers" \
  --include-path ".:$site/current/include:/usr/share/php"
proxy_pid=$last_pid
wait_fcgi "$px"

web_direct=$(free_port) web_proxy=$(free_port)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<CONF
$user_line
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx;
  fastcgi_temp_path $tmp/nginx;
  upstream fpm { server $fpm_direct; keepalive $workers; }
  upstream incpathd { server $px; keepalive $conns; }
  server {
    listen 127.0.0.1:$web_direct;
    root $site/current;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$realpath_root\$fastcgi_script_name;
      fastcgi_param DOCUMENT_ROOT \$realpath_root;
      fastcgi_keep_conn on;
      fastcgi_pass fpm;
    }
  }
  server {
    listen 127.0.0.1:$web_proxy;
    root $site/current;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_keep_conn on;
      fastcgi_pass incpathd;
    }
  }
}
CONF
start "$tmp/nginx/stderr" "${srv_cpus[@]}" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g 'daemon off;'
wait_port "$web_direct"
wait_port "$web_proxy"

for port in "$web_direct" "$web_proxy"; do
  body=$(curl -fsS "http://127.0.0.1:$port/hello.php") || fail "no answer on port $port"
  [ "$body" = "Hello, world!" ] || fail "unexpected answer on port $port: $body"
done

# run PORT measures one set-up with wrk and sets rate and p50 (µs).
run() {
  "${wrk_cpus[@]}" wrk -t1 -c "$conns" -d "${secs}s" --latency "http://127.0.0.1:$1/hello.php" >"$tmp/wrk.out"
  if grep -q 'Non-2xx\|Socket errors' "$tmp/wrk.out"; then
    cat "$tmp/wrk.out" >&2
    fail "wrk saw errors on port $1"
  fi
  read -r rate p50 < <(awk '
    function us(v) {
      if (v ~ /us$/) return v + 0
      if (v ~ /ms$/) return v * 1000
      if (v ~ /s$/) return v * 1000000
      return v
    }
    /Requests\/sec:/ {rate = $2}
    $1 == "50%" {p50 = us($2)}
    END {printf "%.0f %.0f\n", rate, p50}' "$tmp/wrk.out")
}

# With PERF_DATA=FILE, the incpathd runs are recorded with perf record -g
# into FILE (the rounds then take a bit longer).
perf_pid=""
if [ -n "${PERF_DATA:-}" ]; then
  perf record -F 2000 -g -p "$proxy_pid" -o "$PERF_DATA" >"$tmp/perf.log" 2>&1 &
  perf_pid=$!
  pids+=("$perf_pid")
fi

# Warm both up: workers forked, opcache filled, connections kept.
wrk -t1 -c "$conns" -d 2s "http://127.0.0.1:$web_direct/hello.php" >/dev/null
wrk -t1 -c "$conns" -d 2s "http://127.0.0.1:$web_proxy/hello.php" >/dev/null

echo "e2e: nginx $(nginx -v 2>&1 | sed 's|.*/||'), $(basename "$fpm_bin"), wrk -t1 -c$conns, $rounds rounds of ${secs}s, $workers php-fpm workers per pool, FastCGI over $sockets, incpathd GOMAXPROCS=${INCPATHD_PROCS:-1}${INCPATHD_GODEBUG:+ GODEBUG=$INCPATHD_GODEBUG}, pin=$pin, $ncpu CPUs"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share this machine)"
printf '%-6s %10s %11s %7s %11s %11s %9s %11s\n' round direct/s incpathd/s ratio p50-direct p50-incp added 'cpu µs/req'
ratios=() added=() p50d=() p50p=() cpus=()
for r in $(seq "$rounds"); do
  if ((r % 2)); then
    run "$web_direct" && dr=$rate dp=$p50
    t0=$(cpu_ticks "$proxy_pid")
    run "$web_proxy" && pr=$rate pp=$p50
    t1=$(cpu_ticks "$proxy_pid")
  else
    t0=$(cpu_ticks "$proxy_pid")
    run "$web_proxy" && pr=$rate pp=$p50
    t1=$(cpu_ticks "$proxy_pid")
    run "$web_direct" && dr=$rate dp=$p50
  fi
  ratio=$(awk -v a="$pr" -v b="$dr" 'BEGIN {printf "%.3f", a / b}')
  cpu=$(awk -v t=$((t1 - t0)) -v n="$pr" -v s="$secs" 'BEGIN {printf "%.1f", t * 10000 / (n * s)}')
  printf '%-6s %10s %11s %7s %9sµs %9sµs %7sµs %11s\n' "$r" "$dr" "$pr" "$ratio" "$dp" "$pp" $((pp - dp)) "$cpu"
  ratios+=("$ratio") added+=($((pp - dp))) p50d+=("$dp") p50p+=("$pp") cpus+=("$cpu")
done
if [ -n "$perf_pid" ]; then
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
fi
echo "median: throughput $(median "${ratios[@]}") of direct (target ≥ 0.90); p50 $(median "${p50d[@]}")µs direct, $(median "${p50p[@]}")µs through incpathd, added $(median "${added[@]}")µs (target ≤ 50µs); incpathd $(median "${cpus[@]}") µs CPU per request"
