#!/usr/bin/env bash
# incpathd between a FastCGI load generator and an upstream that answers at
# once: what the proxy itself costs, with PHP taken out.
#
#   bench/null-upstream.sh            # 5 rounds of 5 s, 32 connections
#   ROUNDS=3 SECONDS_EACH=10 CONNS=8 PIN=0 bench/null-upstream.sh
#
# Each round runs fcgiload → nullfpm (direct) and fcgiload → incpathd →
# nullfpm, one after the other, and prints both rates, their ratio and the
# CPU incpathd used per request. incpathd runs with its default flags and
# neither GOMAXPROCS nor GODEBUG in its environment, so one thread runs its
# Go code and its rate is what one core gives. With PIN=1 (the default) incpathd is pinned to the
# last CPU and fcgiload and nullfpm to the others (taskset), so that the
# load does not steal incpathd's core; the direct run gets those other CPUs
# only, too. Every connection is kept alive on both sides; 32 of them are
# what a few nginx workers with `keepalive 8` hold. The incpathd
# figures are those of pinning every request: nginx's params, DOCUMENT_ROOT a
# symlink resolved through the cache (default flags), an include_path
# pinned in PHP_VALUE. INCPATHD=path runs that binary instead of building
# one (to compare two builds); INCPATHD_PROCS sets incpathd's GOMAXPROCS,
# INCPATHD_GODEBUG its GODEBUG, INCPATHD_FLAGS adds flags.
source "$(dirname "$0")/lib.sh"

rounds=${ROUNDS:-5}
secs=${SECONDS_EACH:-5}
conns=${CONNS:-32}
pin=${PIN:-1}

build
incpathd=${INCPATHD:-$tmp/bin/incpathd}
make_site
ncpu=$(nproc)
load_cpus=() proxy_cpus=()
if [ "$pin" = 1 ] && [ "$ncpu" -ge 2 ]; then
  proxy_cpus=(taskset -c $((ncpu - 1)))
  load_cpus=(taskset -c 0-$((ncpu - 2)))
fi

up=$(free_port)
start "$tmp/nullfpm.log" "${load_cpus[@]}" "$tmp/bin/nullfpm" --listen "127.0.0.1:$up"
wait_port "$up"
px=$(free_port)
incpathd_env
start "$tmp/incpathd.log" "${proxy_cpus[@]}" "${inc_env[@]}" "$incpathd" \
  --listen "127.0.0.1:$px" --upstream "127.0.0.1:$up" --max-conns "$conns" \
  --include-path ".:$tmp/site/current/include:/usr/share/php" "${inc_flags[@]}"
proxy_pid=$last_pid
wait_port "$px"

load() {
  "${load_cpus[@]}" "$tmp/bin/fcgiload" --addr "$1" -c "$conns" -d "${secs}s" --warmup 1s \
    --docroot "$tmp/site/current"
}

echo "null upstream: $rounds rounds of ${secs}s, $conns kept connections, incpathd $inc_desc, pin=$pin, $ncpu CPUs"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share this machine)"
printf '%-6s %12s %12s %7s %12s %10s %10s\n' round direct/s incpathd/s ratio 'cpu µs/req' p50-direct p50-incp
ratios=() rates=() cpus=()
for r in $(seq "$rounds"); do
  d=$(load "127.0.0.1:$up")
  t0=$(cpu_ticks "$proxy_pid")
  p=$(load "127.0.0.1:$px")
  t1=$(cpu_ticks "$proxy_pid")
  dr=$(field rate "$d") pr=$(field rate "$p") pn=$(field requests "$p")
  # The ticks include the 1 s warm-up; its requests are not counted in pn,
  # so scale by the measured share of the time.
  cpu=$(awk -v t=$((t1 - t0)) -v n="$pn" -v s="$secs" 'BEGIN {printf "%.1f", t * 10000 / n * s / (s + 1)}')
  ratio=$(awk -v a="$pr" -v b="$dr" 'BEGIN {printf "%.2f", a / b}')
  printf '%-6s %12s %12s %7s %12s %9sµs %9sµs\n' "$r" "$dr" "$pr" "$ratio" "$cpu" "$(field p50_us "$d")" "$(field p50_us "$p")"
  ratios+=("$ratio") rates+=("$pr") cpus+=("$cpu")
done
echo "median: incpathd $(median "${rates[@]}") req/s, $(median "${ratios[@]}") of direct, $(median "${cpus[@]}") µs CPU per request (target ≥ 50000 req/s)"
