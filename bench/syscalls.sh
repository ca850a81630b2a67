#!/usr/bin/env bash
# System calls incpathd makes per request in steady state, counted with
# strace -c -f over N requests: the path system calls (stat, readlink,
# open...: strace's %file class) and all of them.
#
#   bench/syscalls.sh               # 20000 requests, 4 connections
#   REQUESTS=50000 bench/syscalls.sh
#
# Every request names DOCUMENT_ROOT through a `current` symlink, so incpathd
# resolves and pins it. Two set-ups: the default flags (symlinks watched with
# inotify: a cached docroot is used until its links change) and
# --watch=false (the cache expires every --realpath-every, 1s). Target: 0
# path system calls per request. strace slows incpathd down a lot; the
# counts, not the times, are the result. INCPATHD=path counts that binary.
source "$(dirname "$0")/lib.sh"

total=${REQUESTS:-20000}
conns=${CONNS:-4}
command -v strace >/dev/null || fail "strace is missing: apt-get install strace"

build
incpathd=${INCPATHD:-$tmp/bin/incpathd}
make_site
up=$(free_port)
start "$tmp/nullfpm.log" "$tmp/bin/nullfpm" --listen "127.0.0.1:$up"
wait_port "$up"

# count LABEL FLAGS... runs incpathd with FLAGS, warms it up, and counts its
# system calls over the requests.
count() {
  local label=$1 px pid strace_pid t0 t1 n
  shift
  px=$(free_port)
  start "$tmp/incpathd-$px.log" "$incpathd" --listen "127.0.0.1:$px" \
    --upstream "127.0.0.1:$up" --max-conns "$conns" \
    --include-path ".:$tmp/site/current/include:/usr/share/php" "$@"
  pid=$last_pid
  wait_port "$px"
  # Warm up: connections kept, the docroot resolved and cached.
  "$tmp/bin/fcgiload" --addr "127.0.0.1:$px" -c "$conns" -n 100 -d 0 --warmup 0 \
    --docroot "$tmp/site/current" >/dev/null
  strace -f -c -o "$tmp/strace-$px" -p "$pid" 2>/dev/null &
  strace_pid=$!
  sleep 1 # strace attaches to every thread
  t0=$(date +%s.%N)
  "$tmp/bin/fcgiload" --addr "127.0.0.1:$px" -c "$conns" -n $((total / conns)) -d 0 --warmup 0 \
    --docroot "$tmp/site/current" >"$tmp/load-$px" || fail "fcgiload failed: $(cat "$tmp/load-$px")"
  t1=$(date +%s.%N)
  kill -INT "$strace_pid"
  wait "$strace_pid" 2>/dev/null || true
  kill "$pid"
  n=$(field requests "$(cat "$tmp/load-$px")")
  awk -v n="$n" -v label="$label" -v secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" '
    BEGIN {
      split("open openat openat2 stat lstat fstatat newfstatat statx readlink readlinkat access faccessat faccessat2 getcwd chdir", names, " ")
      for (i in names) file[names[i]] = 1
    }
    $NF in file {paths += $4; which = which " " $NF "=" $4}
    $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {all += $4; per[$NF] = $4}
    END {
      printf "%-36s %d requests in %.1f s: %d path system calls%s (%.4f per request), %.2f system calls per request",
        label, n, secs, paths, (paths ? " (" substr(which, 2) ")" : ""), paths / n, all / n
      printf " (write %.2f, read %.2f, epoll_pwait %.2f, futex %.2f, nanosleep %.2f, other %.2f)\n",
        per["write"] / n, per["read"] / n, per["epoll_pwait"] / n, per["futex"] / n, per["nanosleep"] / n,
        (all - per["write"] - per["read"] - per["epoll_pwait"] - per["futex"] - per["nanosleep"]) / n
    }' "$tmp/strace-$px"
}

echo "syscalls: strace -c -f on incpathd over $total requests on $conns kept connections"
count "default flags (--watch):"
count "--watch=false --realpath-every 1s:" --watch=false --realpath-every 1s
