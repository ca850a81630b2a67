#!/usr/bin/env bash
# deploy.sh: deploy a new release of a PHP site served through incpathd.
#
#   1. build     copy SOURCE into SITE/releases/NAME and run $BUILD in it;
#   2. activate  `incpathd activate --warm` compiles it into php-fpm's
#                opcache through the daemon, then points SITE/current at it
#                atomically and keeps the old target in SITE/current.previous;
#   3. prune     every release beyond the newest $KEEP is drained with
#                `incpathd drain` (it returns once no request in flight runs
#                in it any more) and deleted. The live release and the
#                previous one, the rollback target, are never deleted. The
#                daemon evicts a drained release's opcache entries by itself
#                (and resets opcache, requests held, when it is full): no
#                opcache_reset() or cachetool step here.
#
# Usage: deploy.sh SITE SOURCE
#
# Environment:
#   INCPATHD       the incpathd binary (default: incpathd in PATH)
#   RELEASE        name of the new release (default: the UTC time,
#                  YYYYmmddHHMMSS). Names must sort oldest first: pruning
#                  keeps the last ones.
#   BUILD          shell command run in the new release before it goes live,
#                  e.g. "composer install --no-dev --optimize-autoloader";
#                  it gets RELEASE_NAME and RELEASE_DIR. If it fails, the
#                  release is removed and the site is left as it was.
#   KEEP           releases kept, the live one included (default 3, at
#                  least 2)
#   DRAIN_TIMEOUT  how long to wait for requests still running in an old
#                  release (default 5m); one still in use is kept, and a
#                  later deploy prunes it
#   INCPATHD_CONTROL
#                  the daemon's --control endpoint, which incpathd drain and
#                  activate --warm ask
#   INCPATHD_SKIP_WARM=1
#                  activate without warming opcache first
#   INCPATHD_SKIP_DRAIN=1
#                  delete old releases without draining them (a daemon
#                  without --control)
#
# Roll back with: incpathd activate --rollback --link SITE/current
set -euo pipefail

prog=${0##*/}
die() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 1
}
warn() { printf '%s: %s\n' "$prog" "$*" >&2; }

if [ $# -ne 2 ]; then
  echo "usage: $prog SITE SOURCE" >&2
  exit 2
fi
incpathd=${INCPATHD:-incpathd}
keep=${KEEP:-3}
drain_timeout=${DRAIN_TIMEOUT:-5m}
[[ $keep =~ ^[0-9]+$ ]] && ((keep >= 2)) ||
  die "KEEP=$keep: want a number, at least 2 (the live release and the rollback target)"
command -v -- "$incpathd" >/dev/null || die "$incpathd not found; set INCPATHD"
[ -d "$2" ] || die "SOURCE $2 is not a directory"
src=$(cd -- "$2" && pwd)
mkdir -p -- "$1/releases"
site=$(cd -- "$1" && pwd)
releases=$site/releases
link=$site/current

# One deploy of a site at a time. The lock goes with the process. It is taken
# on releases/, not on the site directory: incpathd activate locks that one
# while it flips current, and would wait for us.
exec 9<"$releases"
flock -n 9 || die "another deploy of $site is running"

name=${RELEASE:-$(date -u +%Y%m%d%H%M%S)}
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad release name '$name'"
dir=$releases/$name
if [ -e "$dir" ] || [ -L "$dir" ]; then
  die "release $name exists already; set RELEASE to another name"
fi

# Until the new release is live, a failure removes it. Once current resolves
# to it, it stays, even if this script dies right after activating it.
unfinished=1
discard() {
  ((unfinished)) || return 0
  [ -d "$dir" ] || return 0
  if [ "$(readlink -f -- "$link" || true)" = "$(readlink -f -- "$dir")" ]; then
    return 0
  fi
  warn "deploy failed; removing the unfinished release $name"
  rm -rf -- "$dir"
}
trap discard EXIT

# 1. Build.
echo "$prog: building $name"
mkdir -- "$dir"
cp -a -- "$src/." "$dir/"
if [ -n "${BUILD:-}" ]; then
  (cd -- "$dir" && RELEASE_NAME=$name RELEASE_DIR=$dir bash -euo pipefail -c "$BUILD")
fi

# 2. Activate. --allow-root takes real paths, as the daemon's does. --warm
# compiles the release into opcache first, so the first requests after the
# flip find it cached; a warm that fails is reported and the flip goes on.
warm=()
if [ -n "${INCPATHD_CONTROL:-}" ] && [ "${INCPATHD_SKIP_WARM:-}" != 1 ]; then
  warm=(--warm)
fi
"$incpathd" activate "$dir" --link "$link" --allow-root "$(cd -- "$releases" && pwd -P)" "${warm[@]}"
unfinished=0
echo "$prog: $name is live"

# 3. Prune. Releases are the directories in releases/, oldest first; names
# starting with a dot (unfinished builds of other tools) and symlinks are not.
live=$(readlink -f -- "$link")
previous=$(readlink -e -- "$link.previous" || true)
names=()
while IFS= read -r -d '' d; do
  names+=("${d##*/}")
done < <(find "$releases" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -print0 | LC_ALL=C sort -z)

for ((i = 0; i < ${#names[@]} - keep; i++)); do
  old=${names[i]}
  real=$(cd -- "$releases/$old" && pwd -P)
  if [ "$real" = "$live" ] || [ "$real" = "$previous" ]; then
    continue # live, or the rollback target: older than the rest after a rollback
  fi
  if [ "${INCPATHD_SKIP_DRAIN:-}" != 1 ]; then
    echo "$prog: draining $old"
    if ! "$incpathd" drain "$real" --timeout "$drain_timeout"; then
      warn "$old may still be in use; kept for a later deploy to prune"
      continue
    fi
  fi
  if rm -rf -- "${releases:?}/$old"; then
    echo "$prog: deleted $old"
  else
    warn "could not delete all of $old"
  fi
done
