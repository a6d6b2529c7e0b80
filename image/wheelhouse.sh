#!/usr/bin/env bash
# Build the gateway wheel (make wheel) and put it, with the wheels of its
# dependencies for one target architecture, into a wheelhouse that
# install-gateway.sh installs from without any network access.
#
#   image/wheelhouse.sh OUTDIR ARCH
#
# ARCH is the target's machine name: aarch64 for the SD card image (make
# image), x86_64 for make image-check on a PC. Both go through this same
# code; only the platform tags differ.
#
# The gateway's wheel has the native ingest core (image/native-wheel.sh: for
# aarch64 built in a bookworm arm64 root under qemu, as root; for x86_64 on
# this host). GATEWAY_WHEEL=pure takes the pure-Python wheel (make wheel)
# instead: the Python ingest path only, but no root, qemu or compiler needed.
#
# OUTDIR receives the wheels and requirements.txt: every wheel pinned by name,
# version and sha256, so pip installs exactly these files (--require-hashes).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 OUTDIR ARCH   (ARCH: aarch64 | x86_64)" >&2
    exit 2
fi
out=$1
arch=$2
case "$arch" in
    aarch64 | x86_64) ;;
    *) echo "wheelhouse: unsupported ARCH '$arch' (aarch64 or x86_64)" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The target is Debian bookworm (Raspberry Pi OS bookworm is built on it):
# its python3 is 3.11, so the venv made from it needs cp311 wheels.
py_version=3.11
py_abi=cp311
# bookworm's glibc is 2.36: any manylinux_2_X wheel with X <= 36 runs there.
# pip does not widen an explicit --platform to older glibc versions, so every
# one is listed (from 2_17, the oldest tag still published for aarch64).
# Listing only manylinux2014 would make pip quietly pick older releases of
# packages that now publish manylinux_2_28 wheels only (cbor2 6.x does).
glibc_minor_min=17
glibc_minor_max=36
platforms=(--platform "manylinux2014_${arch}")
for ((minor = glibc_minor_min; minor <= glibc_minor_max; minor++)); do
    platforms+=(--platform "manylinux_2_${minor}_${arch}")
done

# The gateway's own wheel, rebuilt from the working tree. Earlier wheels are
# removed first: the version only changes on release, so a wheel of the same
# name from an older tree would otherwise be taken for this one.
kind="${GATEWAY_WHEEL:-native}"
case "$kind" in
    native | pure) ;;
    *) echo "wheelhouse: GATEWAY_WHEEL must be native or pure, not '$kind'" >&2; exit 2 ;;
esac
rm -f dist/print_gateway-*.whl
shopt -s nullglob
case "$kind" in
    native)
        "$root/image/native-wheel.sh" "$arch" dist
        built=(dist/print_gateway-*-"${py_abi}"-"${py_abi}"-linux_"${arch}".whl)
        # The native wheel's own tag (linux_ARCH: built on bookworm itself, not
        # manylinux) is accepted for it alone; it comes last, so that no
        # dependency is taken as a linux_ wheel when a manylinux one exists,
        # and the check after the download refuses any that was.
        platforms+=(--platform "linux_${arch}")
        ;;
    pure)
        "${MAKE:-make}" --no-print-directory wheel
        built=(dist/print_gateway-*-py3-none-any.whl)
        ;;
esac
shopt -u nullglob
if [ ${#built[@]} -ne 1 ]; then
    echo "wheelhouse: expected one gateway wheel in dist/, found ${#built[@]}" >&2
    exit 1
fi
wheel=${built[0]}

rm -rf "$out"
mkdir -p "$out"
# --only-binary: nothing may be compiled on the target (the image has no
# compiler for this, and a build under qemu would take hours).
# --constraint: the exact versions the test suite runs with (constraints.txt).
.venv/bin/pip download --quiet --disable-pip-version-check \
    --dest "$out" \
    --only-binary=:all: \
    "${platforms[@]}" \
    --python-version "$py_version" --implementation cp --abi "$py_abi" \
    --constraint image/constraints.txt \
    "$wheel"

# Only the gateway's own wheel may be a plain linux_ wheel.
shopt -s nullglob
strays=()
for whl in "$out"/*-linux_*.whl; do
    [ "$(basename "$whl")" = "$(basename "$wheel")" ] || strays+=("$(basename "$whl")")
done
shopt -u nullglob
if [ ${#strays[@]} -gt 0 ]; then
    echo "wheelhouse: dependencies only as linux_ wheels (not manylinux): ${strays[*]}" >&2
    exit 1
fi

# requirements.txt: one line per wheel, with its hash. Wheel file names are
# NAME-VERSION-...; neither part contains a dash.
declare -A seen=()
: >"$out/requirements.txt"
for whl in "$out"/*.whl; do
    file="$(basename "$whl")"
    name="${file%%-*}"
    rest="${file#*-}"
    ver="${rest%%-*}"
    if [ -n "${seen[$name]:-}" ]; then
        echo "wheelhouse: two wheels for $name: ${seen[$name]} and $file" >&2
        exit 1
    fi
    seen[$name]=$file
    sum="$(sha256sum "$whl" | cut -d' ' -f1)"
    echo "${name}==${ver} --hash=sha256:${sum}" >>"$out/requirements.txt"
done
if [ -z "${seen[print_gateway]:-}" ]; then
    echo "wheelhouse: the gateway wheel is missing from $out" >&2
    exit 1
fi

echo "wheelhouse ($arch, CPython $py_version, $kind gateway wheel): $out"
sed 's/ --hash=.*//; s/^/  /' "$out/requirements.txt"
