#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2001  # single-quoted $vars in generated text are meant literally
# understudy: install everything the project needs on a fresh Debian 12 machine.
#
#   sudo scripts/setup.sh
#
# Idempotent: a second run checks what is there and finishes in seconds.
#   1. Debian 12 packages (toolchain, libraries, test workloads, tools).
#   2. CRIU >= 4.2 from Debian testing, unpacked with its own libc into a
#      private prefix (default /opt/understudy/criu) and started through that
#      prefix's own dynamic loader. The system's libc and apt are untouched.
#   3. `criu check` of the installed CRIU; a non-zero exit if it fails.
#
# Environment:
#   UNDERSTUDY_CRIU_PREFIX    where CRIU goes (default /opt/understudy/criu)
#   UNDERSTUDY_APT_TESTING    private apt state for the testing suite
#                             (default /var/cache/understudy/apt-testing)
#   UNDERSTUDY_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   UNDERSTUDY_CRIU_SUITE     suite CRIU comes from (default testing)
#   UNDERSTUDY_FORCE_CRIU=1   reinstall CRIU even if a good one is present
set -euo pipefail

CRIU_PREFIX=${UNDERSTUDY_CRIU_PREFIX:-/opt/understudy/criu}
APT_TESTING=${UNDERSTUDY_APT_TESTING:-/var/cache/understudy/apt-testing}
MIRROR=${UNDERSTUDY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CRIU_SUITE=${UNDERSTUDY_CRIU_SUITE:-testing}
CRIU_MIN_VERSION=4.2
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# Debian 12 (bookworm) packages. help2man writes the man pages at build
# time (packaging/man.cmake); prometheus is the real server the metrics test
# scrapes with. libclang-rt-14-dev carries libFuzzer and the
# sanitizer runtimes for clang 14 (-fsanitize=fuzzer,address). nginx and
# memcached are real servers the e2e tests record (their clients are python3);
# their system services are stopped and disabled below (quiet_services).
# nodejs: the managed runtime whose threads the ptrace backend orders
# (tests/e2e/test_record_replay_node.py).
APT_PACKAGES=(
  build-essential g++ cmake ninja-build pkg-config git
  libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  libseccomp-dev golang-go busybox-static
  libbpf-dev bpftool clang llvm libelf-dev zlib1g-dev linux-libc-dev
  libxxhash-dev libcli11-dev libfmt-dev libssl-dev libsystemd-dev
  redis-server redis-tools sqlite3 python3
  gdb
  iproute2 nftables procps util-linux iputils-arping
  clang-format clang-tidy libclang-rt-14-dev
  ca-certificates
  help2man prometheus
  nginx memcached
  nodejs
)

# Packages whose Debian service would start on install (nginx on port 80,
# memcached on 11211).  The tests run their own instances on free loopback
# ports and must not depend on, or collide with, a system one.
QUIET_SERVICES=(nginx memcached)

log() { printf 'understudy: %s\n' "$*"; }
die() { printf 'understudy: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0): it installs packages and writes $CRIU_PREFIX"
if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  die "this script needs a Debian system (dpkg/apt not found)"
fi

# ---------------------------------------------------------------- 1. apt ----
missing_packages() {
  local installed
  installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null || true)
  local p
  for p in "${APT_PACKAGES[@]}"; do
    grep -qx "$p installed" <<<"$installed" || printf '%s\n' "$p"
  done
}

install_apt_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "apt: all ${#APT_PACKAGES[@]} packages already installed"
    return
  fi
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q -o DPkg::Lock::Timeout=600
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
  mapfile -t missing < <(missing_packages)
  [[ ${#missing[@]} -eq 0 ]] || die "apt: still missing after install: ${missing[*]}"
}

# Stops and disables the system services of QUIET_SERVICES, by their own
# init tooling (never by killing processes by name).  Idempotent.
quiet_services() {
  local svc
  for svc in "${QUIET_SERVICES[@]}"; do
    if command -v systemctl >/dev/null; then
      systemctl disable --quiet "$svc.service" 2>/dev/null || true
      if [[ -d /run/systemd/system ]] && systemctl is-active --quiet "$svc.service"; then
        log "services: stopping $svc.service (tests run their own $svc)"
        systemctl stop "$svc.service"
      fi
    fi
    if [[ ! -d /run/systemd/system && -x /etc/init.d/$svc ]]; then
      update-rc.d "$svc" disable >/dev/null 2>&1 || true
      if "/etc/init.d/$svc" status >/dev/null 2>&1; then
        log "services: stopping $svc (tests run their own $svc)"
        "/etc/init.d/$svc" stop
      fi
    fi
  done
}

# --------------------------------------------------------------- 2. CRIU ----
# Private apt configuration for the testing suite: own sources list, lists,
# cache and (empty) status file, so the system's apt never sees testing.
APT_T=(
  -o "Dir::Etc::SourceList=$APT_TESTING/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=/dev/null"
  -o "Dir::State=$APT_TESTING/state"
  -o "Dir::State::Lists=$APT_TESTING/lists"
  -o "Dir::State::status=$APT_TESTING/status"
  -o "Dir::Cache=$APT_TESTING/cache"
  -o "APT::Sandbox::User=root"
  -o "Acquire::Languages=none"
  -o "APT::Install-Recommends=false"
)

criu_version() { # prints e.g. 4.2.1, or nothing
  "$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1
}

version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

criu_check() { # $1 = criu; prints the "criu check" output, status = its status
  "$1" check 2>&1
}

criu_is_good() {
  local criu=$1 v
  [[ -x $criu ]] || return 1
  v=$(criu_version "$criu")
  [[ -n $v ]] && version_ge "$v" "$CRIU_MIN_VERSION" || return 1
  criu_check "$criu" >/dev/null
}

install_criu() {
  local arch
  arch=$(dpkg --print-architecture)
  [[ -r $KEYRING ]] || die "missing $KEYRING (apt-get install debian-archive-keyring)"

  mkdir -p "$APT_TESTING"/{lists/partial,cache/archives/partial,state,debs}
  : >"$APT_TESTING/status"
  printf 'deb [arch=%s signed-by=%s] %s %s main\n' "$arch" "$KEYRING" "$MIRROR" "$CRIU_SUITE" \
    >"$APT_TESTING/sources.list"

  log "criu: fetching the $CRIU_SUITE package index into $APT_TESTING (system apt untouched)"
  apt-get "${APT_T[@]}" -q update >"$APT_TESTING/update.log" 2>&1 ||
    { cat "$APT_TESTING/update.log" >&2; die "apt-get update for $CRIU_SUITE failed (network? keyring too old: apt-get install debian-archive-keyring?)"; }

  local cand
  cand=$(apt-cache "${APT_T[@]}" policy criu | sed -n 's/^ *Candidate: *//p')
  [[ -n $cand && $cand != "(none)" ]] || die "criu not found in Debian $CRIU_SUITE"
  version_ge "${cand#*:}" "$CRIU_MIN_VERSION" ||
    die "Debian $CRIU_SUITE has criu $cand, need >= $CRIU_MIN_VERSION (set UNDERSTUDY_CRIU_SUITE=unstable?)"

  # criu plus the closure of its Depends/Pre-Depends: libc6, libcompel1,
  # libnet9, gnutls and its libs, libnftables1 and its libs, ...
  local pkgs
  mapfile -t pkgs < <(apt-cache "${APT_T[@]}" depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -v '^[ <]' | sort -u)
  log "criu: downloading criu $cand with its runtime closure (${#pkgs[@]} packages): ${pkgs[*]}"
  rm -f "$APT_TESTING"/debs/*.deb
  (cd "$APT_TESTING/debs" && apt-get "${APT_T[@]}" -q download "${pkgs[@]}" >"$APT_TESTING/download.log" 2>&1) ||
    { cat "$APT_TESTING/download.log" >&2; die "apt-get download from $CRIU_SUITE failed"; }

  # Unpack side by side into a fresh directory, then swap it into place.
  local new="$CRIU_PREFIX.new.$$" deb
  rm -rf "$new"
  mkdir -p "$new/root" "$new/bin"
  for deb in "$APT_TESTING"/debs/*.deb; do
    dpkg-deb -x "$deb" "$new/root"
    dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$new/PACKAGES"
  done

  local loader libdirs
  loader=$(cd "$new/root" && { find usr/lib lib -maxdepth 2 -name 'ld-linux*.so.*' 2>/dev/null || true; } |
             sort | head -n1)
  [[ -n $loader ]] || die "criu: no dynamic loader found in the unpacked libc6"
  # Every directory in the prefix that holds shared libraries.
  libdirs=$(cd "$new/root" && find . -name '*.so*' \( -type f -o -type l \) -printf '%h\n' |
              sed 's|^\./||' | grep -E '(^|/)lib' | grep -v '/gconv' | sort -u)
  [[ -x $new/root/usr/sbin/criu ]] || die "criu: usr/sbin/criu missing from the package"

  # The wrapper locates the prefix from its own path, so the prefix can move.
  {
    echo '#!/bin/sh'
    echo "# understudy: CRIU $cand from Debian $CRIU_SUITE, run with its own libc (scripts/setup.sh)."
    echo 'root=$(dirname "$(dirname "$(readlink -f "$0")")")/root'
    printf 'exec "$root/%s" --library-path "%s" "$root/usr/sbin/criu" "$@"\n' \
      "$loader" "$(sed 's|^|$root/|' <<<"$libdirs" | paste -sd:)"
  } >"$new/bin/criu"
  chmod 0755 "$new/bin/criu"

  local v
  v=$(criu_version "$new/bin/criu")
  [[ -n $v ]] || { "$new/bin/criu" --version || true; die "criu: the unpacked criu does not start (see above)"; }

  if [[ -e $CRIU_PREFIX ]]; then
    rm -rf "$CRIU_PREFIX.old"
    mv "$CRIU_PREFIX" "$CRIU_PREFIX.old"
  fi
  mkdir -p "$(dirname "$CRIU_PREFIX")"
  mv "$new" "$CRIU_PREFIX"
  rm -rf "$CRIU_PREFIX.old"
  log "criu: installed CRIU $v in $CRIU_PREFIX"
}

setup_criu() {
  local criu="$CRIU_PREFIX/bin/criu"
  if [[ ${UNDERSTUDY_FORCE_CRIU:-0} != 1 ]] && criu_is_good "$criu"; then
    log "criu: $criu is CRIU $(criu_version "$criu") and passes criu check; skipping download"
    return
  fi
  # Serialise concurrent runs; the loser re-checks after the winner finished.
  mkdir -p "$APT_TESTING"
  exec {lock_fd}>"$APT_TESTING/lock"
  flock "$lock_fd"
  if [[ ${UNDERSTUDY_FORCE_CRIU:-0} != 1 ]] && criu_is_good "$criu"; then
    log "criu: $criu was installed by a concurrent run"
  else
    install_criu
  fi
  exec {lock_fd}>&-
}

# ------------------------------------------------------------------ main ----
install_apt_packages
quiet_services
setup_criu

CRIU="$CRIU_PREFIX/bin/criu"
version=$(criu_version "$CRIU")
[[ -n $version ]] || die "$CRIU does not run. Next step: UNDERSTUDY_FORCE_CRIU=1 $0"
version_ge "$version" "$CRIU_MIN_VERSION" ||
  die "$CRIU is CRIU $version, need >= $CRIU_MIN_VERSION. Next step: UNDERSTUDY_FORCE_CRIU=1 $0"
if ! out=$(criu_check "$CRIU"); then
  printf '%s\n' "$out" >&2
  die "criu check failed for CRIU $version at $CRIU (output above). Next step: fix the kernel feature it names, then run '$CRIU check' again (or UNDERSTUDY_FORCE_CRIU=1 $0 to reinstall)"
fi
verdict=$(grep -m1 -E 'Looks good' <<<"$out" || tail -n1 <<<"$out")
log "using CRIU $version at $CRIU (criu check: ${verdict%.})"
