#!/usr/bin/env bash
# Build the gateway wheel with its native ingest core (gateway/native/,
# docs/native.md) for one target architecture.
#
#   image/native-wheel.sh ARCH [OUTDIR]      (make wheel-native ARCH=...)
#
# aarch64 (the SD card image): built inside a Debian bookworm arm64 root made
#   with debootstrap, through qemu-user-static and binfmt_misc on a PC (run as
#   root). The root is cached outside the repository (GATEWAY_NATIVE_ROOT,
#   default /var/cache/print-gateway/native-root-bookworm-arm64), so only the
#   first build pays for debootstrap. Produces
#   print_gateway-VERSION-cp311-cp311-linux_aarch64.whl.
# x86_64 (make image-check on a PC): built on this host with its .venv, which
#   must be CPython 3.11 like bookworm's: ...-cp311-cp311-linux_x86_64.whl.
#
# The build runs with GATEWAY_REQUIRE_NATIVE=1: a wheel without the extension
# is never produced. Missing host packages (debootstrap, qemu-user-static,
# binfmt-support) are installed with apt-get when possible; anything that
# cannot be done is an error, never skipped. Every step has a time limit
# (below; image/README.md has the measured times).
set -euo pipefail

die() { echo "native-wheel: $*" >&2; exit 1; }
say() { echo "native-wheel: $*"; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 ARCH [OUTDIR]   (ARCH: aarch64 | x86_64; OUTDIR: dist)" >&2
    exit 2
fi
arch=$1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${2:-$root/dist}" && cd "${2:-$root/dist}" && pwd)"
case "$arch" in
    aarch64 | x86_64) ;;
    *) die "unsupported ARCH '$arch' (aarch64 or x86_64)" ;;
esac
cd "$root"

# Time limits, each with room over what it takes here (image/README.md).
t_apt=600            # apt-get update + install of the host tools: ~20 s here
t_debootstrap=2400   # the arm64 root under emulation: ~5 min here; a slow mirror takes longer
t_copy=120           # copying the source tree into the root: a second
t_build=1800         # venv + pip wheel + compiling the core under emulation: ~1-2 min here
t_host_build=600     # the x86_64 wheel on the host: seconds

# Earlier wheels of this architecture are removed first: the version only
# changes on release, so an older tree's wheel of the same name would
# otherwise be taken for this one.
rm -f "$out"/print_gateway-*-linux_"$arch".whl

# --- x86_64: on the host ---------------------------------------------------------
if [ "$arch" = x86_64 ]; then
    [ "$(uname -m)" = x86_64 ] || die "the x86_64 wheel is built on an x86_64 host (this is $(uname -m))"
    "${MAKE:-make}" --no-print-directory .venv/.installed
    # The image-check root is bookworm: CPython 3.11.
    .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null ||
        die ".venv is not CPython 3.11 (bookworm's); the wheel would not install in the root"
    GATEWAY_REQUIRE_NATIVE=1 timeout "$t_host_build" .venv/bin/pip wheel --quiet \
        --disable-pip-version-check --no-deps --wheel-dir "$out" . ||
        die "pip wheel with GATEWAY_REQUIRE_NATIVE=1 failed on the host (a C compiler and python3-dev are needed)"
    shopt -s nullglob
    built=("$out"/print_gateway-*-cp311-cp311-linux_x86_64.whl)
    [ ${#built[@]} -eq 1 ] || die "expected one print_gateway-*-cp311-cp311-linux_x86_64.whl in $out, found ${#built[@]}"
    say "${built[0]}"
    exit 0
fi

# --- aarch64: in a bookworm arm64 root ---------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, binfmt_misc)"
host="$(uname -m)"
case "$host" in
    x86_64 | aarch64) ;;
    *) die "building on a $host host is not supported (x86_64 with qemu, or aarch64)" ;;
esac

suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# minbase plus what compiling the extension and making the wheel need: the
# Python 3.11 headers, gcc and the C library headers, venv (pip), setuptools
# and wheel from Debian (so pip needs no index inside the root).
# shellcheck disable=SC2054  # the commas belong to --include's value
debootstrap_args=(--arch=arm64 --variant=minbase
    --include=python3,python3-dev,python3-venv,python3-setuptools,python3-wheel,gcc,libc6-dev "$suite")
base="${GATEWAY_NATIVE_ROOT:-/var/cache/print-gateway/native-root-$suite-arm64}"
case "$base" in
    /*) ;;
    *) die "GATEWAY_NATIVE_ROOT must be an absolute path" ;;
esac
[ "$base" != / ] || die "GATEWAY_NATIVE_ROOT must not be /"
src_in=/tmp/gateway-src     # inside the root
venv_in=/tmp/gateway-build  # inside the root
dist_in=/tmp/gateway-dist   # inside the root

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Host tools, installed if missing.
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ "$host" != aarch64 ]; then
    [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null || need+=(binfmt-support)
fi
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    say "installing ${need[*]} on the host"
    apt_opts=(-o Acquire::Retries=3 -o Acquire::http::Timeout=60 -q)
    { timeout "$t_apt" apt-get "${apt_opts[@]}" update >/dev/null &&
        DEBIAN_FRONTEND=noninteractive timeout "$t_apt" apt-get "${apt_opts[@]}" install -y \
            --no-install-recommends "${need[@]}" >/dev/null; } ||
        die "apt-get install ${need[*]} failed"
fi

# binfmt_misc: mounted, with qemu-aarch64 registered with the F flag (the
# kernel opens the interpreter at registration, so it works inside a chroot
# that has no qemu of its own).
if [ "$host" != aarch64 ]; then
    bm=/proc/sys/fs/binfmt_misc
    if ! mountpoint -q "$bm"; then
        mount -t binfmt_misc binfmt_misc "$bm" ||
            die "cannot mount binfmt_misc on $bm (a container needs it from its host)"
    fi
    if ! grep -qx enabled "$bm/qemu-aarch64" 2>/dev/null; then
        # Checked just below: either may fail when the other has done it.
        update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    grep -qx enabled "$bm/qemu-aarch64" 2>/dev/null ||
        die "qemu-aarch64 is not registered in $bm (update-binfmts --enable qemu-aarch64 failed)"
    grep -q '^flags:.*F' "$bm/qemu-aarch64" ||
        die "qemu-aarch64 is registered without the F flag ($(grep '^flags' "$bm/qemu-aarch64")): a chroot cannot find its interpreter"
fi

# The root, cached: a stamp records the debootstrap command that made it, so
# a change of packages or mirror makes it again.
stamp="debootstrap ${debootstrap_args[*]} $mirror"
unmount_under() {
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$1/" | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
}
if [ -f "$base/.native-root-complete" ] && [ "$(cat "$base/.native-root-complete")" = "$stamp" ]; then
    say "cached root $base"
else
    say "debootstrap ${debootstrap_args[*]} into $base (minutes under emulation)"
    unmount_under "$base"
    rm -rf "$base"
    mkdir -p "$(dirname "$base")"
    t0=$SECONDS
    log="$(dirname "$base")/debootstrap-$(basename "$base").log"
    timeout "$t_debootstrap" debootstrap "${debootstrap_args[@]}" "$base" "$mirror" >"$log" 2>&1 ||
        die "debootstrap failed or took over $t_debootstrap s; see $log: $(tail -n 3 "$log" | tr '\n' ' ')"
    echo "$stamp" >"$base/.native-root-complete"
    say "debootstrap took $((SECONDS - t0)) s"
fi

in_root() {
    chroot "$base" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}
[ "$(timeout 60 chroot "$base" /usr/bin/uname -m 2>&1)" = aarch64 ] ||
    die "cannot run the root's aarch64 programs (chroot $base /usr/bin/uname -m)"

unmount_under "$base"
mount -t proc proc "$base/proc"
mounted+=("$base/proc")

# The working tree (what git would commit, tracked or not, without what
# .gitignore leaves out: no .venv, build/, dist/ or compiled module).
rm -rf "${base:?}$src_in" "${base:?}$venv_in" "${base:?}$dist_in"
mkdir -p "$base$src_in"
t0=$SECONDS
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$root" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        timeout "$t_copy" tar --null -T - -cf - | timeout "$t_copy" tar -xf - -C "$base$src_in" ||
        die "copying the source tree into the root failed"
else
    timeout "$t_copy" tar -cf - --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./var \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude='./gateway/_native*.so' . |
        timeout "$t_copy" tar -xf - -C "$base$src_in" || die "copying the source tree into the root failed"
fi

# A venv that sees Debian's setuptools and wheel; pip builds without an index
# and without build isolation (nothing is downloaded inside the root).
say "building in the arm64 root (minutes under emulation)"
t0=$SECONDS
log="$(dirname "$base")/build-$(basename "$base").log"
if ! timeout --kill-after=10 "$t_build" chroot "$base" /usr/bin/env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 GATEWAY_REQUIRE_NATIVE=1 \
    PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    sh -ec "python3 -m venv --system-site-packages $venv_in
            $venv_in/bin/pip wheel --no-deps --no-build-isolation --wheel-dir $dist_in $src_in" \
    >"$log" 2>&1; then
    die "the wheel build in the root failed or took over $t_build s; see $log: $(tail -n 5 "$log" | tr '\n' ' ')"
fi
shopt -s nullglob
built=("$base$dist_in"/print_gateway-*-cp311-cp311-linux_aarch64.whl)
shopt -u nullglob
[ ${#built[@]} -eq 1 ] ||
    die "expected one print_gateway-*-cp311-cp311-linux_aarch64.whl, found: $(ls "$base$dist_in")"
# The extension must be in it (GATEWAY_REQUIRE_NATIVE=1 already fails a
# build without it; this checks the packaging too).
in_root python3 -c '
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "gateway/_native.cpython-311-aarch64-linux-gnu.so" in names, names
' "$dist_in/$(basename "${built[0]}")" || die "${built[0]} has no gateway/_native.cpython-311-aarch64-linux-gnu.so"
cp "${built[0]}" "$out/"
rm -rf "${base:?}$src_in" "${base:?}$venv_in" "${base:?}$dist_in"
say "built in $((SECONDS - t0)) s: $out/$(basename "${built[0]}")"
