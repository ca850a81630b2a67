#!/usr/bin/env bash
# Real nginx and php-fpm with a hello-world PHP page, driven by wrk, through
# four paths measured alternately in the same run:
#
#   direct    nginx → php-fpm (the usual $realpath_root recipe)
#   haproxy   nginx → haproxy, mode tcp, its defaults → php-fpm
#   stream    nginx → a second nginx, stream module (proxy_pass) → php-fpm
#   incpathd  nginx → incpathd, default flags → php-fpm
#
# and, with PATHS, two relays in Go that parse nothing either
# (bench/cmd/gorelay, run as incpathd runs: GOMAXPROCS=1, the monitor kept
# awake): what one hop costs in Go before any FastCGI is read.
#
#   gorelay     two goroutines per connection, blocking reads and writes
#   epollrelay  one thread running an epoll loop, as haproxy does
#
#   bench/e2e.sh                                   # 5 rounds of 10 s, at 8 then 32 connections
#   ROUNDS=3 SECONDS_EACH=5 CONNS="1 8 64 512" bench/e2e.sh
#   PATHS="haproxy incpathd" INCPATHD_PROCS=2 SOCKETS=unix PIN=1 bench/e2e.sh
#   PATHS="haproxy incpathd before" BEFORE=bin/incpathd-main bench/e2e.sh
#   PATHS="haproxy gorelay epollrelay incpathd" bench/e2e.sh
#
# haproxy and nginx stream are TCP relays that parse nothing: the floor of
# what a process in the middle costs. For each number of connections in
# CONNS, every path gets a fresh set-up and each round measures all of them
# one after the other, starting one path later each round, so that a change
# in the machine's load hits them alike. Per path and round: requests/s, the
# ratio to direct in that round, p50 and p99 (wrk --latency), wrk's errors,
# and the relay's CPU time per request: user+system time from /proc/PID/stat
# of the relay and its live children (threads are in the process's figure),
# before and after the round, over the requests wrk counted, in clock ticks
# of 10 ms, so about 1% over a 5 s round, and the user time in it (the
# relay's own code; the rest is the kernel's, mostly the loopback). Then the
# medians, and incpathd's figures over each relay's: CPU per request (and
# user time), throughput, added p50, p99.
#
# Every hop keeps its connections alive: wrk to nginx, nginx to its
# upstream (keepalive + fastcgi_keep_conn), the relays' one connection to
# php-fpm per nginx connection, incpathd's pool. Each path has its own
# php-fpm pool (static, opcache on) of WORKERS workers: by default twice
# the connections, at most 16 (two CPUs gain nothing from more), so at 8
# connections every request finds a worker and at 32 and up they do not.
# incpathd gets --max-conns WORKERS. nginx keeps WORKERS idle connections
# to php-fpm or a relay, CONNS to incpathd, which multiplexes them on its
# pool: with more connections than workers, php-fpm gives each kept
# connection a worker until it closes and the rest wait in its backlog,
# which the p99s of direct and the relays show and incpathd's does not.
# The direct, haproxy and stream paths pin with $realpath_root; incpathd
# gets the symlinked $document_root to resolve (cached and watched) and an
# include_path to pin, as in production.
#
# incpathd runs with its default flags and neither GOMAXPROCS nor GODEBUG
# in its environment; INCPATHD_PROCS sets GOMAXPROCS, INCPATHD_GODEBUG
# GODEBUG, INCPATHD_FLAGS adds flags, INCPATHD=path runs that binary
# instead of building one. PATHS picks the paths (direct, if in it, gives
# the ratios). The path "before" is incpathd too, run from the binary
# BEFORE with the same flags and environment: a change measured against
# the build it replaces in the same rounds. FastCGI goes over loopback TCP, or unix sockets with
# SOCKETS=unix. PERF_DATA=FILE records incpathd with perf record -g (into
# FILE.cN for each N in CONNS).
#
# PIN=1 pins wrk to CPU 0 and the servers to the other CPUs (taskset);
# PIN=0 (the default) lets the scheduler place everything, which on a
# two-core machine measures better for every path. Everything listens on
# loopback ports that were free or in a temporary directory and is stopped
# on exit.
source "$(dirname "$0")/lib.sh"

rounds=${ROUNDS:-5}
secs=${SECONDS_EACH:-10}
conns_list=${CONNS:-8 32}
read -r -a paths <<<"${PATHS:-direct haproxy stream incpathd}"
pin=${PIN:-0}
sockets=${SOCKETS:-tcp}

has_path() { [[ " ${paths[*]} " == *" $1 "* ]]; }
for p in "${paths[@]}"; do
  case $p in direct | haproxy | stream | incpathd | before | gorelay | epollrelay) ;;
  *) refuse "PATHS: unknown path $p (direct, haproxy, stream, incpathd, before, gorelay, epollrelay)" ;;
  esac
  case $p in gorelay | epollrelay) [ "$sockets" = tcp ] || refuse "PATHS: $p relays TCP only, not SOCKETS=$sockets" ;; esac
done
for c in $conns_list; do
  [[ $c =~ ^[1-9][0-9]*$ ]] || refuse "CONNS: $c is not a positive number"
done

need nginx nginx-light
need wrk wrk
need curl curl
fpm_bin=$(compgen -G '/usr/sbin/php-fpm*' | sort | tail -n 1 || true)
[ -n "$fpm_bin" ] || refuse "php-fpm is missing: apt-get install php-fpm"
if has_path haproxy; then need haproxy haproxy; fi
if has_path before; then
  [ -x "${BEFORE:-}" ] || refuse "PATHS has before: BEFORE must name an incpathd binary"
fi
stream_module=""
if has_path stream; then
  modules=$(nginx -V 2>&1 | tr ' ' '\n' | sed -n 's/^--modules-path=//p')
  stream_module=${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so
  [ -f "$stream_module" ] || refuse "nginx's stream module is missing ($stream_module): apt-get install libnginx-mod-stream"
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
cat >"$tmp/php.ini" <<INI
zend_extension=opcache.so
opcache.enable=1
INI

as_root=() user_line="" fpm_user=""
if [ "$(id -u)" = 0 ]; then as_root=(-R) user_line="user root;" fpm_user="user = root"; fi

incpathd_env

# FastCGI addresses: loopback TCP ports, or unix sockets with SOCKETS=unix,
# in incpathd's and nginx's notation (unix:/path or host:port); php-fpm and
# haproxy take the part after "unix:".
fcgi_addr() {
  if [ "$sockets" = unix ]; then echo "unix:$dir/$1.sock"; else echo "127.0.0.1:$(free_port)"; fi
}
bare() { echo "${1#unix:}"; }
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

# setup starts php-fpm, the relays, incpathd and the web server for $conns
# connections and $workers workers in $dir. It sets web[PATH] (the port
# wrk uses) and relay[PATH] (the pid whose CPU is counted).
declare -A web relay fpm_addr
setup() {
  local p a root docroot
  mkdir -p "$dir/nginx" "$dir/stream"
  for p in "${paths[@]}"; do fpm_addr[$p]=$(fcgi_addr "fpm-$p"); done
  {
    printf '[global]\nerror_log = %s\ndaemonize = no\n' "$dir/fpm.log"
    for p in "${paths[@]}"; do
      printf '[%s]\nlisten = %s\npm = static\npm.max_children = %s\n%s\n' \
        "$p" "$(bare "${fpm_addr[$p]}")" "$workers" "$fpm_user"
    done
  } >"$dir/fpm.conf"
  PHP_INI_SCAN_DIR='' start "$dir/fpm.out" "${srv_cpus[@]}" "$fpm_bin" -F "${as_root[@]}" -y "$dir/fpm.conf" -c "$tmp/php.ini"
  for p in "${paths[@]}"; do wait_fcgi "${fpm_addr[$p]}"; done

  # Where nginx sends each path, and how many idle connections it keeps.
  declare -A next keep
  for p in "${paths[@]}"; do next[$p]=${fpm_addr[$p]} keep[$p]=$workers; done
  if has_path haproxy; then
    next[haproxy]=$(fcgi_addr haproxy)
    cat >"$dir/haproxy.cfg" <<CONF
global
  maxconn 8192
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend fcgi
  bind $(bare "${next[haproxy]}")
  default_backend fpm
backend fpm
  server fpm $(bare "${fpm_addr[haproxy]}")
CONF
    start "$dir/haproxy.log" "${srv_cpus[@]}" haproxy -db -f "$dir/haproxy.cfg"
    relay[haproxy]=$last_pid
    wait_fcgi "${next[haproxy]}"
  fi
  if has_path stream; then
    next[stream]=$(fcgi_addr stream)
    cat >"$dir/stream/nginx.conf" <<CONF
load_module $stream_module;
$user_line
worker_processes 1;
pid $dir/stream/nginx.pid;
error_log $dir/stream/error.log;
events { worker_connections 8192; }
stream {
  server { listen ${next[stream]}; proxy_pass ${fpm_addr[stream]}; }
}
CONF
    start "$dir/stream/stderr" "${srv_cpus[@]}" nginx -p "$dir/stream" -c "$dir/stream/nginx.conf" -g 'daemon off;'
    relay[stream]=$last_pid
    wait_fcgi "${next[stream]}"
  fi
  for p in gorelay epollrelay; do
    has_path $p || continue
    local loop=goroutines
    [ $p = gorelay ] || loop=epoll
    next[$p]=$(fcgi_addr $p)
    start "$dir/$p.log" "${srv_cpus[@]}" env GOMAXPROCS=1 GODEBUG=schedtrace=2147483647 "$tmp/bin/gorelay" \
      --listen "${next[$p]}" --upstream "${fpm_addr[$p]}" --loop $loop
    relay[$p]=$last_pid
    wait_fcgi "${next[$p]}"
  done
  for p in incpathd before; do
    has_path $p || continue
    local bin=$incpathd
    [ $p = incpathd ] || bin=$BEFORE
    next[$p]=$(fcgi_addr $p) keep[$p]=$conns
    start "$dir/$p.log" "${srv_cpus[@]}" "${inc_env[@]}" "$bin" --listen "${next[$p]}" \
      --upstream "${fpm_addr[$p]}" --max-conns "$workers" \
      --include-path ".:$site/current/include:/usr/share/php" "${inc_flags[@]}"
    relay[$p]=$last_pid
    wait_fcgi "${next[$p]}"
  done

  {
    cat <<CONF
$user_line
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/nginx;
  fastcgi_temp_path $dir/nginx;
CONF
    for p in "${paths[@]}"; do
      web[$p]=$(free_port)
      # incpathd resolves the symlinked docroot itself; the others need
      # nginx's $realpath_root.
      root='$realpath_root' docroot="fastcgi_param DOCUMENT_ROOT \$realpath_root;"
      [ "$p" != incpathd ] && [ "$p" != before ] || root='$document_root' docroot=""
      cat <<CONF
  upstream $p { server ${next[$p]}; keepalive ${keep[$p]}; }
  server {
    listen 127.0.0.1:${web[$p]};
    root $site/current;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $root\$fastcgi_script_name;
      $docroot
      fastcgi_keep_conn on;
      fastcgi_pass $p;
    }
  }
CONF
    done
    echo "}"
  } >"$dir/nginx/nginx.conf"
  start "$dir/nginx/stderr" "${srv_cpus[@]}" nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;'
  for p in "${paths[@]}"; do
    wait_port "${web[$p]}"
    a=$(curl -fsS "http://127.0.0.1:${web[$p]}/hello.php") || fail "$p: no answer on port ${web[$p]}"
    [ "$a" = "Hello, world!" ] || fail "$p: unexpected answer on port ${web[$p]}: $a"
  done
}

# run PATH measures one path with wrk and sets n (requests), rate, p50 and
# p99 (µs), errs (non-2xx answers and socket errors), cpu (the relay's
# µs of CPU per request, "-" for direct) and ucpu (the user time in it).
run() {
  local t0=0 t1=0 u0=0 u1=0
  [ -z "${relay[$1]:-}" ] || t0=$(cpu_ticks_tree "${relay[$1]}") u0=$(cpu_ticks_tree "${relay[$1]}" user)
  "${wrk_cpus[@]}" wrk -t1 -c "$conns" -d "${secs}s" --timeout 10s --latency \
    "http://127.0.0.1:${web[$1]}/hello.php" >"$dir/wrk.out"
  [ -z "${relay[$1]:-}" ] || t1=$(cpu_ticks_tree "${relay[$1]}") u1=$(cpu_ticks_tree "${relay[$1]}" user)
  read -r n rate p50 p99 errs < <(awk '
    function us(v) {
      if (v ~ /us$/) return v + 0
      if (v ~ /ms$/) return v * 1000
      if (v ~ /s$/) return v * 1000000
      return v
    }
    / requests in / {n = $1}
    /Requests\/sec:/ {rate = $2}
    $1 == "50%" {p50 = us($2)}
    $1 == "99%" {p99 = us($2)}
    /Non-2xx/ {errs += $NF}
    /Socket errors:/ {gsub(",", ""); errs += $4 + $6 + $8 + $10}
    END {printf "%d %.0f %.0f %.0f %d\n", n, rate, p50, p99, errs}' "$dir/wrk.out")
  [ "$n" -gt 0 ] || fail "$1: wrk served no request ($(cat "$dir/wrk.out"))"
  cpu=- ucpu=-
  [ -z "${relay[$1]:-}" ] || cpu=$(per_request $((t1 - t0)) "$n") ucpu=$(per_request $((u1 - u0)) "$n")
}

# per_request TICKS N prints TICKS clock ticks of 10 ms over N requests in µs.
per_request() { awk -v t="$1" -v n="$2" 'BEGIN {printf "%.1f", t * 10000 / n}'; }

# lat US prints a latency in µs, ms or s.
lat() {
  awk -v u="$1" 'BEGIN {
    if (u < 1000) printf "%dµs", u; else if (u < 1000000) printf "%.2fms", u / 1000; else printf "%.2fs", u / 1000000 }'
}
# added US prints a latency difference with its sign.
added() { awk -v u="$1" 'BEGIN {exit u < 0}' && echo "+$(lat "$1")" || echo "-$(lat "${1#-}")"; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf (b > 0 ? "%.2f" : "-"), a / b}'; }

# measure runs the rounds at $conns connections and prints them, the medians
# and the comparisons; the medians also go to $tmp/summary.
measure() {
  local r i p np=${#paths[@]}
  declare -A rates ratios p50s p99s addeds errss cpus ucpus rate_of p50_of
  printf '%-6s %-9s %9s %6s %9s %9s %11s %6s %7s\n' round path req/s ratio p50 p99 'cpu µs/req' user errors
  for r in $(seq "$rounds"); do
    for i in $(seq 0 $((np - 1))); do
      p=${paths[$(((i + r - 1) % np))]}
      run "$p"
      rate_of[$p]=$rate p50_of[$p]=$p50
      rates[$p]+=" $rate" p50s[$p]+=" $p50" p99s[$p]+=" $p99" errss[$p]+=" $errs"
      [ "$cpu" = - ] || cpus[$p]+=" $cpu" ucpus[$p]+=" $ucpu"
      printf '%-6s %-9s %9s %6s %9s %9s %11s %6s %7s\n' "$r" "$p" "$rate" "" "$(lat "$p50")" "$(lat "$p99")" "$cpu" "$ucpu" "$errs"
    done
    if has_path direct; then
      for p in "${paths[@]}"; do
        ratios[$p]+=" $(div "${rate_of[$p]}" "${rate_of[direct]}")"
        addeds[$p]+=" $((p50_of[$p] - p50_of[direct]))"
      done
    fi
  done
  echo "median over $rounds rounds at $conns connections:"
  printf '  %-9s %9s %6s %9s %9s %9s %11s %6s %7s\n' path req/s ratio p50 added p99 'cpu µs/req' user errors
  declare -A med_cpu med_ucpu med_rate med_ratio med_added med_p99
  for p in "${paths[@]}"; do
    # shellcheck disable=SC2086 # the lists split into median's arguments
    {
      med_rate[$p]=$(printf '%.0f' "$(median ${rates[$p]})") med_p99[$p]=$(median ${p99s[$p]})
      med_ratio[$p]=- med_added[$p]=- med_cpu[$p]=- med_ucpu[$p]=-
      [ -z "${ratios[$p]:-}" ] || med_ratio[$p]=$(median ${ratios[$p]}) med_added[$p]=$(median ${addeds[$p]})
      [ -z "${cpus[$p]:-}" ] || med_cpu[$p]=$(median ${cpus[$p]}) med_ucpu[$p]=$(median ${ucpus[$p]})
      local p50 errs
      p50=$(median ${p50s[$p]}) errs=$(printf '%s\n' ${errss[$p]} | awk '{s += $1} END {print s}')
    }
    local added=-
    [ "${med_added[$p]}" = - ] || [ "$p" = direct ] || added=$(added "${med_added[$p]}")
    printf '  %-9s %9s %6s %9s %9s %9s %11s %6s %7s\n' "$p" "${med_rate[$p]}" "${med_ratio[$p]}" "$(lat "$p50")" \
      "$added" "$(lat "${med_p99[$p]}")" "${med_cpu[$p]}" "${med_ucpu[$p]}" "$errs"
    printf '%s %s %s %s %s %s %s %s %s\n' "$conns" "$workers" "$p" "${med_rate[$p]}" "${med_ratio[$p]}" \
      "$p50" "${med_p99[$p]}" "${med_cpu[$p]}" "$errs" >>"$tmp/summary"
  done
  if has_path incpathd; then
    for p in haproxy stream gorelay epollrelay before; do
      has_path "$p" || continue
      printf '  incpathd/%s: CPU per request %s (user %s), throughput %s, p99 %s' "$p" \
        "$(div "${med_cpu[incpathd]}" "${med_cpu[$p]}")" "$(div "${med_ucpu[incpathd]}" "${med_ucpu[$p]}")" \
        "$(div "${med_rate[incpathd]}" "${med_rate[$p]}")" \
        "$(div "${med_p99[incpathd]}" "${med_p99[$p]}")"
      [ "${med_added[$p]}" = - ] || printf ', added p50 %s against %s' "$(added "${med_added[incpathd]}")" "$(added "${med_added[$p]}")"
      echo
    done
  fi
}

echo "e2e: nginx $(nginx -v 2>&1 | sed 's|.*/||'), $(basename "$fpm_bin")$(has_path haproxy && haproxy -v | awk 'NR == 1 {print ", haproxy " $3}'), wrk -t1, $rounds rounds of ${secs}s, FastCGI over $sockets, incpathd $inc_desc, pin=$pin, $ncpu CPUs"
for conns in $conns_list; do
  workers=${WORKERS:-$((2 * conns < 16 ? 2 * conns : 16))}
  dir=$tmp/c$conns
  setup
  # Warm every path up: workers forked, opcache filled, connections kept.
  for p in "${paths[@]}"; do
    wrk -t1 -c "$conns" -d 2s "http://127.0.0.1:${web[$p]}/hello.php" >/dev/null
  done
  perf_pid=""
  if [ -n "${PERF_DATA:-}" ] && has_path incpathd; then
    perf_out=$PERF_DATA
    [ "$(wc -w <<<"$conns_list")" = 1 ] || perf_out=$PERF_DATA.c$conns
    perf record -F 2000 -g -p "${relay[incpathd]}" -o "$perf_out" >"$dir/perf.log" 2>&1 &
    perf_pid=$!
    pids+=("$perf_pid")
  fi
  echo
  echo "== $conns connections: $workers php-fpm workers per path, incpathd --max-conns $workers; load $(cut -d' ' -f1-3 /proc/loadavg) (other processes share this machine)"
  measure
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
  fi
  stop_started
  web=() relay=() fpm_addr=()
done

if [ "$(wc -w <<<"$conns_list")" -gt 1 ]; then
  echo
  echo "summary (medians):"
  printf '%6s %8s %-9s %9s %6s %9s %9s %11s %7s\n' conns workers path req/s ratio p50 p99 'cpu µs/req' errors
  while read -r c w p rate ratio p50 p99 cpu errs; do
    printf '%6s %8s %-9s %9s %6s %9s %9s %11s %7s\n' "$c" "$w" "$p" "$rate" "$ratio" "$(lat "$p50")" "$(lat "$p99")" "$cpu" "$errs"
  done <"$tmp/summary"
fi
