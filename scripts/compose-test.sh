#!/usr/bin/env bash
# make compose-test: runs docker/compose.yaml for real and checks, through
# the port nginx is published on, what the sidecar set-up promises: pinned
# responses, a flip by `incpathd activate` seen by the next request, a
# request in flight across the flip finishing on its own release,
# maintenance mode on and off, and /readyz following the php-fpm container.
# Then it checks docker/k8s/incpathd.yaml (scripts/k8s-check.sh).
#
# It brings what is missing and cleans up after itself, also on failure:
# - Debian packages (docker.io, mmdebstrap, curl), installed without
#   starting their services;
# - Docker Compose v2, built from its Go module when `docker compose` is
#   missing (Debian bookworm packages only the old Python docker-compose);
# - a Docker engine: the one DOCKER_HOST or the default socket reaches, else
#   a private dockerd with its own socket, stopped when the script ends;
# - the images: NGINX_IMAGE, PHP_FPM_IMAGE and GO_IMAGE if set, else the
#   official ones if they are present or can be pulled, else stand-ins made
#   from Debian packages (docker/local/rootfs-hook.sh).
#
# Caches, kept between runs under $XDG_CACHE_HOME/incpathd/compose-test
# (~/.cache/...): the Compose binary, the private engine's data (images and
# build cache) and the downloaded .deb files.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

COMPOSE_VERSION=v2.29.7
cache=${XDG_CACHE_HOME:-$HOME/.cache}/incpathd/compose-test
project=incpathd-compose-test
uid=65532 # docker/Dockerfile's USER

say() { printf '[compose-test %4ds] %s\n' "$SECONDS" "$*"; }
die() {
  printf 'compose-test: FAIL: %s\n' "$*" >&2
  exit 1
}
trap 'printf "compose-test: %s: line %d: %s failed\n" "$0" "$LINENO" "$BASH_COMMAND" >&2' ERR

mkdir -p "$cache"
# One run at a time: the private engine's data root and the project name are
# shared.
exec 9>"$cache/lock"
flock -w 1800 9 || die "another compose-test holds $cache/lock"

# Everything of this run that is not cache: the site copy, logs, the
# private engine's sockets (short paths: unix socket names are limited).
run=$(mktemp -d /tmp/incpathd-compose.XXXXXX)
dockerd_pid="" compose_build_pid="" bridge_existed=1 compose=() up=0 net_saved=0

cleanup() {
  local code=$?
  trap - ERR
  set +e
  if ((up)); then
    if ((code != 0)); then
      say "logs of the containers:"
      "${compose[@]}" logs --no-color --tail 30 2>&1 | sed 's/^/  /'
    fi
    say "compose down"
    "${compose[@]}" down --volumes --remove-orphans --timeout 5 >"$run/down.log" 2>&1 ||
      sed 's/^/  /' "$run/down.log"
  fi
  if [ -n "$compose_build_pid" ]; then
    kill "$compose_build_pid" 2>/dev/null
    wait "$compose_build_pid" 2>/dev/null
  fi
  if [ -n "$dockerd_pid" ]; then
    # Images that lost their tag to a newer build, and build cache beyond
    # what a run needs: only in our own engine.
    docker image prune --force >/dev/null 2>&1
    docker builder prune --force --keep-storage 3GB >/dev/null 2>&1
    say "stopping the private dockerd ($dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      say "dockerd did not stop in 30s: killing it"
      kill -KILL "$dockerd_pid"
    fi
    wait "$dockerd_pid" 2>/dev/null
    if ((!bridge_existed)) && command -v ip >/dev/null; then
      ip link delete docker0 2>/dev/null
    fi
    restore_net
  fi
  rm -rf "$run"
  if ((code == 0)); then
    say "passed"
  else
    printf 'compose-test: failed (exit %d) after %ds\n' "$code" "$SECONDS" >&2
  fi
  exit "$code"
}
trap cleanup EXIT

# dockerd sets the FORWARD chain's policy to DROP, turns IP forwarding on
# and adds its chains, and leaves them when it stops: on a machine that had
# none of its chains, what it did is undone after it.
save_net() {
  command -v iptables-save >/dev/null && command -v iptables-restore >/dev/null || return 0
  iptables -n -L DOCKER >/dev/null 2>&1 && return 0
  forward_policy=$(iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" { print $3 }')
  ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)
  [ -n "$forward_policy" ] && net_saved=1
}
restore_net() {
  ((net_saved)) || return 0
  iptables-save | grep -v -e DOCKER -e docker0 | iptables-restore ||
    say "could not remove dockerd's iptables rules"
  iptables -P FORWARD "$forward_policy"
  echo "$ip_forward" >/proc/sys/net/ipv4/ip_forward
}

# --- packages ---------------------------------------------------------------

apt_updated=0
install_pkgs() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  say "installing: $*"
  # docker.io and containerd start their services when installed; this
  # script starts the engine it needs itself.
  local policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# installed by incpathd scripts/compose-test.sh for one apt-get run\nexit 101\n' |
      $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  local ok=1
  if ((!apt_updated)); then
    $sudo apt-get update -qq || ok=0
    apt_updated=1
  fi
  if ((ok)); then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" \
      >"$run/apt.log" 2>&1 || ok=0
  fi
  ((!policy)) || $sudo rm -f /usr/sbin/policy-rc.d
  ((ok)) || { tail -20 "$run/apt.log" >&2; die "apt-get install $* failed"; }
}

need=()
command -v curl >/dev/null || need+=(curl ca-certificates)
command -v docker >/dev/null || need+=(docker.io)
((${#need[@]} == 0)) || install_pkgs "${need[@]}"

# --- Docker Compose v2 ------------------------------------------------------

compose_bin=$cache/tools/compose-$COMPOSE_VERSION/docker-compose
if docker compose version --short 2>/dev/null | grep -q '^v\?[2-9]\.'; then
  compose_cmd=(docker compose)
else
  compose_cmd=("$compose_bin")
  if [ ! -x "$compose_bin" ]; then
    command -v go >/dev/null || die "docker compose is missing, and building it needs Go"
    # Built in the background while the engine and the images get ready.
    say "building Docker Compose $COMPOSE_VERSION from its Go module (once; cached)"
    (
      set -e
      out=$cache/tools/compose-$COMPOSE_VERSION
      mkdir -p "$out.tmp"
      GOFLAGS= GOBIN=$out.tmp go install -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
        "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION"
      mv "$out.tmp/cmd" "$out.tmp/docker-compose"
      rm -rf "$out" && mv "$out.tmp" "$out"
    ) >"$run/compose-build.log" 2>&1 &
    compose_build_pid=$!
  fi
fi

# --- the engine ---------------------------------------------------------------

if docker info >/dev/null 2>&1; then
  say "using the running Docker engine ($(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || echo "${DOCKER_HOST:-default}"))"
else
  [ "$(id -u)" = 0 ] || die "no Docker engine answers (docker info); start one, or run as root for a private one"
  command -v dockerd >/dev/null || install_pkgs docker.io
  command -v ip >/dev/null && { ip link show docker0 >/dev/null 2>&1 || bridge_existed=0; }
  save_net
  say "starting a private dockerd (data root $cache/docker)"
  dockerd --data-root "$cache/docker" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
    --host "unix://$run/docker.sock" >"$run/dockerd.log" 2>&1 &
  dockerd_pid=$!
  export DOCKER_HOST=unix://$run/docker.sock
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$run/dockerd.log" >&2; die "dockerd exited"; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -20 "$run/dockerd.log" >&2; die "dockerd did not answer in 60s"; }
  say "dockerd $(docker version --format '{{.Server.Version}}'), storage driver $(docker info --format '{{.Driver}}')"
fi

# --- images -------------------------------------------------------------------

# have_or_pull IMAGE: whether IMAGE is there, pulled if it was not.
registry_down=0
have_or_pull() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  ((!registry_down)) || return 1
  say "pulling $1"
  if timeout 300 docker pull --quiet "$1" >"$run/pull.log" 2>&1; then
    return 0
  fi
  say "cannot pull $1: $(tail -1 "$run/pull.log")"
  registry_down=1
  return 1
}

# local_images builds the stand-ins, tagged with a hash of their recipe so
# that a change of it makes new ones and a second run finds them. Raise
# standin_version when changing how they are made below.
standin_version=1
standin_packages=nginx-light,php-fpm
local_images() {
  local key goversion goroot
  key=$({ cat "$repo/docker/local/rootfs-hook.sh"; echo "$standin_version $standin_packages"; } |
    sha256sum | cut -c1-12)
  goversion=$(go env GOVERSION)
  goroot=$(go env GOROOT)
  local_nginx=incpathd-local/nginx:$key
  local_php=incpathd-local/php-fpm:$key
  local_go=incpathd-local/golang:$goversion-$key
  if docker image inspect "$local_nginx" "$local_php" "$local_go" >/dev/null 2>&1; then
    say "stand-in images found: $local_nginx $local_php $local_go"
    return
  fi
  command -v mmdebstrap >/dev/null || install_pkgs mmdebstrap gpg
  say "making the stand-in images from Debian bookworm packages (once; cached)"
  local debs=$cache/debs tar=$run/rootfs.tar
  mkdir -p "$debs"
  # The .deb files are kept for the next build (essential/unlink keeps
  # those of the essential packages too).
  mmdebstrap --quiet --variant=minbase --include="$standin_packages" \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
    --setup-hook="sync-in $debs /var/cache/apt/archives" \
    --customize-hook="find $debs -name '*.deb' -delete" \
    --customize-hook="sync-out /var/cache/apt/archives $debs" \
    --customize-hook="$repo/docker/local/rootfs-hook.sh \"\$1\"" \
    bookworm "$tar" >"$run/mmdebstrap.log" 2>&1 ||
    { tail -30 "$run/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  docker import --change 'CMD ["nginx", "-g", "daemon off;"]' --change 'EXPOSE 80' \
    "$tar" "$local_nginx" >/dev/null
  docker import --change 'CMD ["php-fpm"]' --change 'EXPOSE 9000' --change 'WORKDIR /var/www/html' \
    "$tar" "$local_php" >/dev/null
  # The build stage: the same system with this machine's Go toolchain, which
  # go.mod's version is, and the certificate authorities this machine
  # trusts, to reach the same module proxy.
  tar --append --file "$tar" --transform 's,^\.,usr/local/go,' -C "$goroot" .
  tar --append --file "$tar" --dereference -C / etc/ssl/certs/ca-certificates.crt
  docker import --change 'ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV GOTOOLCHAIN=local' --change 'ENV GOPATH=/go' --change 'WORKDIR /go' \
    "$tar" "$local_go" >/dev/null
  rm -f "$tar"
  say "made $local_nginx $local_php $local_go"
  # Stand-ins of an older recipe.
  docker images --format '{{.Repository}}:{{.Tag}}' 'incpathd-local/*' | grep -v -- "$key\$" |
    xargs -r docker rmi >/dev/null 2>&1 || true
}

pick() { # VAR OFFICIAL STANDIN_VAR
  local var=$1 official=$2
  if [ -n "${!var:-}" ]; then
    say "$var=${!var} (given)"
    return
  fi
  if have_or_pull "$official"; then
    export "$var=$official"
  else
    [ -n "${local_nginx:-}" ] || local_images
    export "$var=${!3}"
  fi
  say "$var=${!var}"
}
pick NGINX_IMAGE nginx:1.26-alpine local_nginx
pick PHP_FPM_IMAGE php:8.2-fpm local_php
pick GO_IMAGE golang:1.26-bookworm local_go

if [ -n "$compose_build_pid" ]; then
  say "waiting for the Compose build"
  if ! wait "$compose_build_pid"; then
    compose_build_pid=""
    tail -30 "$run/compose-build.log" >&2
    die "building Docker Compose failed"
  fi
  compose_build_pid=""
fi
say "$("${compose_cmd[@]}" version)"

# --- up -----------------------------------------------------------------------

# The sample site is copied: the test flips its current symlink.
cp -a docker/site "$run/site"
cat >"$run/override.yaml" <<EOF
services:
  incpathd:
    volumes:
      - $run/site:/var/www/site:ro
  php-fpm:
    volumes:
      - $run/site:/var/www/site:ro
EOF
# Port 0: the engine picks a free one, read back after up.
NGINX_PORT=${NGINX_PORT:-0}
export NGINX_PORT
compose=("${compose_cmd[@]}" --project-name "$project" -f docker/compose.yaml -f "$run/override.yaml")
# What an interrupted run left.
"${compose[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
up=1
say "compose up --build"
if ! "${compose[@]}" up --build --detach >"$run/up.log" 2>&1; then
  tail -40 "$run/up.log" >&2
  die "docker compose up failed"
fi
published=$("${compose[@]}" port nginx 80) || die "nginx publishes no port"
url=http://127.0.0.1:${published##*:}
say "nginx published on $url"

# --- checks -------------------------------------------------------------------

# get [CURL ARGS...] PATH: sets status and body (headers in $run/headers).
status="" body=""
get() {
  local path=${*: -1}
  status=$(curl -sS --max-time 60 -D "$run/headers" -o "$run/body" -w '%{http_code}' \
    "${@:1:$#-1}" "$url$path" 2>"$run/curl.err") || status="curl: $(cat "$run/curl.err")"
  body=$(cat "$run/body" 2>/dev/null || true)
}

# wait_status WANT SECONDS PATH: polls PATH until it answers WANT; fails
# after SECONDS, or at once when a container has exited.
wait_status() {
  local want=$1 path=$3 end=$((SECONDS + $2)) exited
  while :; do
    get "$path"
    [ "$status" = "$want" ] && return 0
    ((SECONDS < end)) || { why="got $status: $body"; return 1; }
    # socket-dir is a one-shot step: it exits once it has done its job.
    exited=$("${compose[@]}" ps --all --status exited --format '{{.Service}}' 2>/dev/null |
      grep -v -e '^socket-dir$' -e "^${ignore_exited:-}\$" || true)
    [ -z "$exited" ] || { why="got $status, and $exited exited"; return 1; }
    sleep 0.5
  done
}
until_status() {
  wait_status "$@" || die "GET $3: want $1 within $2s, $why"
}

# want_page RELEASE TEXT: TEXT is the sample page answered wholly by RELEASE.
want_page() {
  local rel=$1 got=$2 dir=/var/www/site/releases/$1 want
  want="release: $rel
include_path: $rel
DOCUMENT_ROOT: $rel
document_root: $dir
script_filename: $dir/index.php
include_path_setting: .:$dir/include"
  if [ "$got" != "$want" ]; then
    diff <(echo "$want") <(echo "$got") | sed 's/^/  /' >&2
    die "${3:-the page} is not release $rel's alone (above: < wanted, > got)"
  fi
}

say "waiting for the first page"
if ! wait_status 200 90 /; then
  first=$why
  get /readyz
  die "GET /: want 200 within 90s, $first; incpathd's /readyz answers $status: $body"
fi
want_page A "$body" "GET /"
get -X POST -d a=1 /some/route
[ "$status" = 200 ] || die "POST /some/route: $status: $body"
want_page A "$body" "POST /some/route"
get "/index.php/a/b?c=d"
[ "$status" = 200 ] || die "GET /index.php/a/b: $status: $body"
want_page A "$body" "GET /index.php/a/b"
say "ok: pinned to release A (DOCUMENT_ROOT, SCRIPT_FILENAME, include_path)"

# incpathd's own script runs in php-fpm from the shared socket directory:
# the pool's ini values were learned (no key left to a worker's last value).
"${compose[@]}" logs --no-color incpathd >"$run/incpathd.log" 2>&1 || true
grep -q "learned the php-fpm pool's ini values" "$run/incpathd.log" ||
  die "incpathd did not learn the pool's ini values through its script in /run/php: $(grep -i 'probe\|fpmcall\|opcache' "$run/incpathd.log" | tail -5)"
say "ok: incpathd's script ran in php-fpm (the pool's ini values learned)"

# incpathd runs as the image's user.
user=$(docker inspect --format '{{.Config.User}}' "$("${compose[@]}" ps -q incpathd)")
[ "$user" = "$uid:$uid" ] || die "incpathd's container runs as '$user', want $uid:$uid"

# A request in flight across the flip: its first line comes at once, the
# rest (and lib.php's include) 5 seconds later.
curl -sS -N --max-time 120 -o "$run/inflight" -w '%{http_code}' "$url/?sleep=5" \
  >"$run/inflight.status" 2>"$run/inflight.err" &
inflight=$!
for _ in $(seq 120); do
  grep -q '^started: ' "$run/inflight" 2>/dev/null && break
  kill -0 "$inflight" 2>/dev/null || break
  sleep 0.25
done
grep -qx 'started: A' "$run/inflight" 2>/dev/null ||
  die "the slow request did not start on A within 30s: $(cat "$run/inflight" "$run/inflight.err" 2>/dev/null)"

# The deploy: incpathd activate, from the image, on the code volume (the
# containers mount it read-only).
image=$("${compose[@]}" images -q incpathd | head -1)
[ -n "$image" ] || die "no image for the incpathd service"
docker run --rm --user "$(id -u):$(id -g)" --network none -v "$run/site:/var/www/site" "$image" \
  activate /var/www/site/releases/B --link /var/www/site/current --allow-root /var/www/site/releases \
  >"$run/activate.log" 2>&1 || die "incpathd activate failed: $(cat "$run/activate.log")"
[ "$(readlink "$run/site/current")" = releases/B ] || die "current -> $(readlink "$run/site/current") after activate"
say "activated B: $(tr '\n' ' ' <"$run/activate.log")"
get /
[ "$status" = 200 ] || die "GET / after the flip: $status: $body"
want_page B "$body" "the first request after the flip"
say "ok: the next request is B's"

wait "$inflight" || die "the request in flight failed: $(cat "$run/inflight.err")"
[ "$(cat "$run/inflight.status")" = 200 ] || die "the request in flight: status $(cat "$run/inflight.status")"
[ "$(head -1 "$run/inflight")" = "started: A" ] || die "the request in flight: $(cat "$run/inflight")"
want_page A "$(tail -n +2 "$run/inflight")" "the request in flight across the flip"
say "ok: the request in flight across the flip finished on A, late include too"

# Maintenance mode, set in the incpathd container.
"${compose[@]}" exec -T incpathd /incpathd maintenance on >"$run/mm.log" 2>&1 ||
  die "incpathd maintenance on: $(cat "$run/mm.log")"
until_status 503 10 /
grep -qi '^X-Maintenance-Mode: 1' "$run/headers" || die "503 without X-Maintenance-Mode: $(cat "$run/headers")"
grep -qi '^Retry-After: ' "$run/headers" || die "503 without Retry-After: $(cat "$run/headers")"
"${compose[@]}" exec -T incpathd /incpathd maintenance off >"$run/mm.log" 2>&1 ||
  die "incpathd maintenance off: $(cat "$run/mm.log")"
until_status 200 10 /
want_page B "$body" "GET / after maintenance"
say "ok: maintenance on (503, X-Maintenance-Mode, Retry-After) and off"

# /readyz follows php-fpm.
until_status 200 10 /readyz
ignore_exited=php-fpm
"${compose[@]}" stop --timeout 10 php-fpm >"$run/stop.log" 2>&1 || die "stop php-fpm: $(cat "$run/stop.log")"
until_status 503 30 /readyz
say "ok: php-fpm stopped: /readyz 503: $body"
get /
[ "$status" = 502 ] || die "GET / with php-fpm stopped: want 502, got $status: $body"
"${compose[@]}" start php-fpm >"$run/start.log" 2>&1 || die "start php-fpm: $(cat "$run/start.log")"
ignore_exited=
until_status 200 60 /readyz
get /
[ "$status" = 200 ] || die "GET / with php-fpm back: $status: $body"
want_page B "$body" "GET / with php-fpm back"
say "ok: php-fpm back: /readyz 200, pages served"

# --- Kubernetes -----------------------------------------------------------------

say "checking docker/k8s (no cluster: scripts/k8s-check.sh)"
./scripts/k8s-check.sh
