#!/usr/bin/env bash
# A 1 GiB request body and a 1 GiB response streamed through incpathd, and
# the peak resident memory (VmHWM) of the incpathd process after each.
#
#   bench/memory.sh             # 1 GiB each way
#   SIZE=$((256 << 20)) bench/memory.sh
#
# The upstream is nullfpm, which reads a body and throws it away, and answers
# with as many bytes as the request's NULLAPP_RESPONSE_BYTES param asks for;
# fcgiload plays the web server on one kept connection. Target: a peak of
# 64 MiB or less, whatever the sizes.
source "$(dirname "$0")/lib.sh"

size=${SIZE:-$((1 << 30))}
build
incpathd=${INCPATHD:-$tmp/bin/incpathd}
make_site
up=$(free_port)
start "$tmp/nullfpm.log" "$tmp/bin/nullfpm" --listen "127.0.0.1:$up"
wait_port "$up"
px=$(free_port)
start "$tmp/incpathd.log" "$incpathd" --listen "127.0.0.1:$px" --upstream "127.0.0.1:$up"
proxy_pid=$last_pid
wait_port "$px"

# once WANT ARGS... sends one request through incpathd, checks that at least
# WANT bytes of STDOUT came back, and prints the time it took.
once() {
  local want=$1 out t0 t1
  shift
  t0=$(date +%s.%N)
  out=$("$tmp/bin/fcgiload" --addr "127.0.0.1:$px" -c 1 -n 1 -d 0 --warmup 0 \
    --docroot "$tmp/site/current" "$@") || fail "fcgiload failed: $out"
  t1=$(date +%s.%N)
  (($(field stdout_bytes "$out") >= want)) || fail "short response: $out"
  awk -v a="$t0" -v b="$t1" -v size="$size" 'BEGIN {printf "%.1f s, %.0f MiB/s", b - a, size / 1048576 / (b - a)}'
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

echo "memory: $(mib $((size / 1024))) each way through incpathd (default flags), peak RSS (VmHWM) of incpathd"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share this machine)"
"$tmp/bin/fcgiload" --addr "127.0.0.1:$px" -c 1 -n 10 -d 0 --warmup 0 --docroot "$tmp/site/current" >/dev/null
start_kib=$(hwm_kib "$proxy_pid")
printf '%-34s %s\n' "after start and 10 small requests" "$(mib "$start_kib")"
r=$(once 0 --body-bytes "$size")
up_kib=$(hwm_kib "$proxy_pid")
printf '%-34s %s (%s)\n' "after the body" "$(mib "$up_kib")" "$r"
r=$(once "$size" --response-bytes "$size")
down_kib=$(hwm_kib "$proxy_pid")
printf '%-34s %s (%s)\n' "after the response" "$(mib "$down_kib")" "$r"
r=$(once "$size" --body-bytes "$size" --response-bytes "$size")
both_kib=$(hwm_kib "$proxy_pid")
printf '%-34s %s (%s one way)\n' "after both in one request" "$(mib "$both_kib")" "$r"
verdict="met"
((both_kib <= 64 * 1024)) || verdict="MISSED"
echo "peak: $(mib "$both_kib") (target ≤ 64 MiB: $verdict)"
