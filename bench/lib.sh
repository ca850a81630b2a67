# Shared by the bench scripts: temporary directory, process clean-up, free
# loopback ports, and process figures from /proc. Source it; it sets $tmp and
# a trap that stops every process started with `start` and removes $tmp.

set -euo pipefail
tmp=$(mktemp -d)
pids=()
keep_tmp=0
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$keep_tmp" = 1 ]; then
    echo "logs kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}

# fail MESSAGE stops everything, keeping the logs.
fail() {
  echo "$*" >&2
  keep_tmp=1
  exit 1
}

# refuse MESSAGE stops before anything ran: bad input, a missing program.
refuse() {
  echo "$*" >&2
  exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start LOG CMD... runs CMD in the background with its output in LOG and
# remembers its pid in $last_pid.
start() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

# free_port prints a loopback port nobody listens on, below Linux's
# ephemeral range (32768 and up), where outgoing connections would take it.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

# wait_port PORT waits until something accepts on it.
wait_port() {
  local _
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  fail "nothing listens on port $1"
}

# stop_started stops every process started with `start` so far, and waits
# for them: the next set-up starts from nothing.
stop_started() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# need COMMAND PACKAGE fails, saying what to install, unless COMMAND is on
# the PATH.
need() {
  command -v "$1" >/dev/null || refuse "$1 is missing: apt-get install $2"
}

# cpu_ticks PID prints the user+system CPU time the process used so far, in
# clock ticks (1/100 s on Linux). The process's stat counts all its threads.
# With a second argument "user", user time only.
cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  # Fields after the command: state is field 3, utime 14, stime 15.
  awk -v user="${2:-}" '{print user == "user" ? $12 : $12 + $13}' <<<"$stat"
}

# descendants PID prints PID and the pids of all its live descendants.
descendants() {
  local c
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do descendants "$c"; done
}

# cpu_ticks_tree PID prints the CPU time, in clock ticks, of PID and every
# live descendant: a relay that forks workers (nginx, haproxy in
# master-worker mode) counts them all. A child that exits during a round
# takes its time with it, so the set-ups keep their processes for the run.
# A second argument "user" counts user time only.
cpu_ticks_tree() {
  local p t=0 n
  for p in $(descendants "$1"); do
    n=$(cpu_ticks "$p" "${2:-}" 2>/dev/null) || continue
    t=$((t + n))
  done
  echo "$t"
}

# hwm_kib PID prints the process's peak resident set size in KiB (VmHWM).
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# median prints the median of its arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# field KEY LINE prints the value of KEY=VALUE in LINE.
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'; }

# build puts incpathd and the bench programs in $tmp/bin.
build() {
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." &&
    go build -o "$tmp/bin/" ./cmd/incpathd ./bench/cmd/fcgiload ./bench/cmd/nullfpm ./bench/cmd/gorelay)
}

# make_site makes $tmp/site with current -> releases/A, the docroot the
# requests name, so that incpathd resolves and pins every one.
make_site() {
  mkdir -p "$tmp/site/releases/A"
  ln -s releases/A "$tmp/site/current"
}

# incpathd_env sets inc_env, the command prefix that gives incpathd its
# environment, inc_flags, flags to add, and inc_desc, their description.
# incpathd gets its defaults, whatever the caller's shell has, unless a knob
# says otherwise: INCPATHD_PROCS sets GOMAXPROCS, INCPATHD_GODEBUG GODEBUG,
# INCPATHD_FLAGS adds flags. The knobs' own variables would read as
# INCPATHD_* flags, so they go too.
incpathd_env() {
  inc_env=(env -u GOMAXPROCS -u GODEBUG -u INCPATHD_PROCS -u INCPATHD_GODEBUG -u INCPATHD_FLAGS)
  inc_desc="default flags, GOMAXPROCS and GODEBUG unset"
  if [ -n "${INCPATHD_PROCS:-}" ] || [ -n "${INCPATHD_GODEBUG:-}" ] || [ -n "${INCPATHD_FLAGS:-}" ]; then
    inc_desc="${INCPATHD_PROCS:+GOMAXPROCS=$INCPATHD_PROCS }${INCPATHD_GODEBUG:+GODEBUG=$INCPATHD_GODEBUG }${INCPATHD_FLAGS:-}"
    inc_desc=${inc_desc% }
  fi
  [ -z "${INCPATHD_PROCS:-}" ] || inc_env+=("GOMAXPROCS=$INCPATHD_PROCS")
  [ -z "${INCPATHD_GODEBUG:-}" ] || inc_env+=("GODEBUG=$INCPATHD_GODEBUG")
  read -r -a inc_flags <<<"${INCPATHD_FLAGS:-}"
}
