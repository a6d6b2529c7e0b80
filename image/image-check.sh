#!/usr/bin/env bash
# make image-check: prove on a PC what can be proven about the SD card image
# without a Raspberry Pi.
#
#  - the wheelhouse for the root's architecture (image/wheelhouse.sh, the
#    code that makes the image's aarch64 wheelhouse), and the image's aarch64
#    wheelhouse itself (with the gateway wheel built by image/native-wheel.sh
#    in an arm64 root under qemu; installed only with IMAGE_CHECK_ARCH=aarch64);
#  - a Debian bookworm root from debootstrap (cached), with pi-gen's
#    config.txt and cmdline.txt, into which the pi-gen stage's 00-run.sh
#    (assembled as make image does) runs install-gateway.sh; then
#    install-gateway.sh once more on the same root (it must be repeatable);
#  - inside that root: the files, the service user, the enabled units, the
#    installed configuration, gateway --version, pip check, gateway verify on
#    a fresh state directory, a short gateway run that takes one acknowledged
#    event and stops on SIGTERM, verify and export after it, and
#    systemd-analyze verify of the installed units;
#  - the native ingest core: gateway._native imports with the installed
#    venv's Python, and tests/test_native_differential.py and
#    tests/test_native_path.py pass against the installed package with
#    GATEWAY_REQUIRE_NATIVE=1 (test libraries from a wheelhouse of their own,
#    no network; under emulation with fewer property-test examples);
#  - add-data-partition.sh on an image laid out like pi-gen's, and
#    gateway-firstboot against a loop device made from it.
#
# What it cannot prove (no Pi hardware, no real boot, no overlayroot at run
# time, no hardware watchdog, not pi-gen itself) is listed in image/README.md.
#
# Needs root (debootstrap, chroot, mounts, loop devices) and: debootstrap,
# parted, e2fsprogs, util-linux, fdisk, cloud-guest-utils (growpart); for
# the aarch64 gateway wheel (always built) and IMAGE_CHECK_ARCH=aarch64 on a
# PC also qemu-user-static and binfmt_misc (image/native-wheel.sh installs
# and registers them when it can). GATEWAY_WHEEL=pure checks the pure-Python
# wheel instead (no native checks then).
# Everything lives in build/image-check/; the debootstrap root is cached
# there (delete build/image-check/base-* to start from scratch).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
img="$root/image"
build="$root/build/image-check"
# The root's architecture: this machine's by default. IMAGE_CHECK_ARCH=aarch64
# on a PC runs the same checks in an arm64 root through qemu-user-static and
# binfmt_misc, with the very wheelhouse the image gets.
arch="${IMAGE_CHECK_ARCH:-$(uname -m)}"
case "$arch" in
    x86_64) debarch=amd64 ;;
    aarch64) debarch=arm64 ;;
    *) echo "image-check: IMAGE_CHECK_ARCH must be x86_64 or aarch64" >&2; exit 2 ;;
esac
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# minbase plus what the image's root has from Raspberry Pi OS Lite and the
# gateway needs before install-gateway.sh runs: python3 with venv, systemd
# (systemd-sysusers, systemctl, systemd-analyze), procps (/bin/kill, the
# unit's ExecReload).
# shellcheck disable=SC2054  # the commas belong to --include's value
debootstrap_args=(--arch="$debarch" --variant=minbase --include=python3,python3-venv,systemd,procps "$suite")
base="$build/base-$suite-$debarch"
work="$build/root"
wheel_host="$build/wheelhouse-$arch"
wheel_arm="$build/wheelhouse-aarch64"
stage="$build/stage-gateway"
logs="$build/logs"
smoke=/tmp/gw-smoke        # inside the root
fresh=/tmp/gw-fresh        # inside the root

# Time limits, each with room over what it takes here (image/README.md has
# the measured times).
t_wheelhouse=3600    # native wheel + ~2 MB of downloads: 1.5 min here (aarch64, cached
                     # build root); the first aarch64 build adds debootstrap, ~6 min
t_debootstrap=1800   # about 1 min here, 4-5 min emulated arm64; a slow mirror takes longer
t_install=1200       # apt + venv: 10-25 s here, 1.5 min emulated arm64
t_cmd=60             # one gateway or systemd command in the root
t_ready=30           # gateway run: start-up recovery and binding, seconds at most
t_send=30            # one acknowledged event (gateway send --timeout is 10 s)
t_stop=30            # SIGTERM to exit: the unit's TimeoutStopSec
t_loop=120           # loop device test (partition grow, fsck, resize)
t_tests=2400         # the native tests in the root: ~40 s here, ~5 min emulated arm64 (cap 50)
# Property-test examples in the root (GATEWAY_DIFF_MAX_EXAMPLES): the full
# counts natively, a small cap under emulation, where the interpreter is
# ~10-20 times slower. IMAGE_CHECK_DIFF_EXAMPLES overrides (0: no cap).
if [ "$arch" = "$(uname -m)" ]; then
    diff_examples="${IMAGE_CHECK_DIFF_EXAMPLES:-0}"
else
    diff_examples="${IMAGE_CHECK_DIFF_EXAMPLES:-50}"
fi
wheel_kind="${GATEWAY_WHEEL:-native}"
testhouse="$build/testhouse"
tests_in=/tmp/gw-tests          # inside the root
testlibs_in=/tmp/gw-testlibs    # inside the root
testhouse_in=/tmp/gw-testhouse  # inside the root

started=$SECONDS
results=()
failed=0
record() { # record STATUS NAME [DETAIL]
    results+=("$(printf '%-5s %s%s' "$1" "$2" "${3:+  ($3)}")")
    [ "$1" != FAIL ] || failed=1
    printf '%-5s %s%s\n' "$1" "$2" "${3:+  ($3)}"
}
summarised=""
summary() {
    summarised=1
    echo
    echo "== image-check summary ($((SECONDS - started)) s; logs in ${logs#"$root"/}) =="
    printf '%s\n' "${results[@]}"
    if [ "$failed" = 0 ]; then
        echo "== PASS =="
    else
        echo "== FAIL =="
    fi
}

# --- cleanup: every mount, loop device and process started here -------------
gw_pid=""
loop=""
loop_mnt=""
proc_mounted=""
cleanup() {
    local rc=$?
    if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
        kill -KILL "$gw_pid" 2>/dev/null || true
        wait "$gw_pid" 2>/dev/null || true
    fi
    if [ -n "$loop_mnt" ]; then
        umount "$loop_mnt" 2>/dev/null || true
        rmdir "$loop_mnt" 2>/dev/null || true
    fi
    if [ -n "$loop" ]; then
        partx -d "$loop" 2>/dev/null || true
        losetup -d "$loop" 2>/dev/null || true
    fi
    if [ -n "$proc_mounted" ]; then
        umount "$work/proc" 2>/dev/null || umount -l "$work/proc" || true
    fi
    # Anything install-gateway.sh or debootstrap could not unmount (killed).
    unmount_under "$work" || true
    unmount_under "$base" || true
    if [ -z "$summarised" ]; then
        echo "image-check: stopped (exit $rc) before the summary; == FAIL ==" >&2
        [ "$rc" != 0 ] || rc=1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftover mounts under a directory (from a run that was killed -9) are
# unmounted before it is deleted: rm -rf must never walk into /proc.
unmount_under() {
    local dir=$1 m
    for m in $(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
}

# Commands in the root with a clean environment, as root or as the service
# user (numeric ids from the root's own passwd and group files), each bounded
# by t_cmd (as_gateway_for: by the limit given).
in_root() {
    timeout "$t_cmd" chroot "$work" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}
as_gateway_for() {
    local limit=$1
    shift
    timeout "$limit" chroot --userspec="$gw_uid:$gw_gid" --groups="$gw_groups" "$work" \
        /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 "$@"
}
as_gateway() { as_gateway_for "$t_cmd" "$@"; }

fatal() { # a step the rest depends on failed
    record FAIL "$1" "${2:-}"
    summary
    exit 1
}

# --- preflight -----------------------------------------------------------------
[ "$(id -u)" = 0 ] || { echo "image-check: run as root (debootstrap, chroot, mounts, loop devices)" >&2; exit 1; }
missing=()
for tool in debootstrap chroot parted mke2fs e2fsck dumpe2fs blkid losetup partx findmnt growpart timeout python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "image-check: missing ${missing[*]}" >&2
    echo "  apt-get install debootstrap parted e2fsprogs util-linux fdisk cloud-guest-utils coreutils python3" >&2
    exit 1
fi
if [ "$arch" != "$(uname -m)" ] && ! grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$arch" 2>/dev/null; then
    echo "image-check: an $arch root on $(uname -m) needs qemu-user-static and binfmt_misc" >&2
    echo "  apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-$arch" >&2
    exit 1
fi
mkdir -p "$build" "$logs"
rm -f "$logs"/*.log

# --- wheelhouses -----------------------------------------------------------------
t0=$SECONDS
if timeout "$t_wheelhouse" "$img/wheelhouse.sh" "$wheel_host" "$arch" >"$logs/wheelhouse-$arch.log" 2>&1; then
    record PASS "wheel + wheelhouse for $arch" "$(grep -c . "$wheel_host/requirements.txt") wheels, $((SECONDS - t0)) s"
else
    fatal "wheel + wheelhouse for $arch" "see logs/wheelhouse-$arch.log"
fi
# The image's wheelhouse: every wheel either pure Python or built for
# CPython 3.11 (or the stable ABI, abi3, of an older 3.x: pynacl) on
# manylinux aarch64, but the gateway's own: built for CPython
# 3.11 aarch64 on bookworm (linux_aarch64, with the native core), unless
# GATEWAY_WHEEL=pure.
if [ "$arch" = aarch64 ]; then
    wheel_arm=$wheel_host
elif ! timeout "$t_wheelhouse" "$img/wheelhouse.sh" "$wheel_arm" aarch64 >"$logs/wheelhouse-aarch64.log" 2>&1; then
    wheel_arm=""
fi
if [ -n "$wheel_arm" ] &&
    ! printf '%s\n' "$wheel_arm"/*.whl | grep -v -E -- '-(py3|py2\.py3)-none-any\.whl$|-(cp311-cp311|cp3[0-9]+-abi3)-manylinux[^-]*aarch64\.whl$|/print_gateway-[^-]*-cp311-cp311-linux_aarch64\.whl$' >>"$logs/wheelhouse-aarch64.log" &&
    if [ "$wheel_kind" = pure ]; then
        compgen -G "$wheel_arm/print_gateway-*-py3-none-any.whl" >/dev/null
    else
        compgen -G "$wheel_arm/print_gateway-*-cp311-cp311-linux_aarch64.whl" >/dev/null
    fi; then
    record PASS "wheelhouse for the image (aarch64, cp311, $wheel_kind gateway wheel): built, resolved, downloaded" "$(sed 's/ --hash=.*//' "$wheel_arm/requirements.txt" | tr '\n' ' ')"
else
    record FAIL "wheelhouse for the image (aarch64, cp311)" "see logs/wheelhouse-aarch64.log"
fi

# The test libraries for the native tests in the root, in a wheelhouse of
# their own (the versions the development venv runs; pure Python), so the
# root installs them without network, as it does the gateway's.
if [ "$wheel_kind" != pure ]; then
    t0=$SECONDS
    # shellcheck disable=SC2086  # $test_reqs: one requirement per word
    if test_reqs="$(.venv/bin/python -c '
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("pytest", "hypothesis", "pytest-timeout")))
')" && rm -rf "$testhouse" &&
        timeout "$t_wheelhouse" .venv/bin/pip download --quiet --disable-pip-version-check \
            --dest "$testhouse" --only-binary=:all: --platform "manylinux2014_$arch" \
            --python-version 3.11 --implementation cp --abi cp311 \
            $test_reqs >"$logs/testhouse.log" 2>&1; then
        record PASS "test wheelhouse (no network in the root)" "$test_reqs, $((SECONDS - t0)) s"
    else
        record FAIL "test wheelhouse" "see logs/testhouse.log"
        testhouse=""
    fi
fi

# --- the debootstrap root (cached) -------------------------------------------
stamp="debootstrap ${debootstrap_args[*]} $mirror"
t0=$SECONDS
if [ -f "$base/.image-check-complete" ] && [ "$(cat "$base/.image-check-complete")" = "$stamp" ]; then
    record PASS "debootstrap $suite $debarch root (cached)" "${base#"$root"/}"
else
    unmount_under "$base"
    rm -rf "$base"
    if timeout "$t_debootstrap" debootstrap "${debootstrap_args[@]}" "$base" "$mirror" \
        >"$logs/debootstrap.log" 2>&1; then
        echo "$stamp" >"$base/.image-check-complete"
        record PASS "debootstrap $suite $debarch root (minbase + python3 python3-venv systemd procps)" "$((SECONDS - t0)) s"
    else
        fatal "debootstrap $suite root" "see logs/debootstrap.log"
    fi
fi

# A fresh copy for every run: install-gateway.sh always meets a clean root.
unmount_under "$work"
rm -rf "$work"
cp -a "$base" "$work"
rm -f "$work/.image-check-complete"
# Raspberry Pi boot files as pi-gen leaves them before the gateway stage.
install -D -m 0644 "$img/check/config.txt" "$work/boot/firmware/config.txt"
install -D -m 0644 "$img/check/cmdline.txt" "$work/boot/firmware/cmdline.txt"

# --- install: the pi-gen stage's 00-run.sh, then install-gateway.sh again ----
# First exactly as pi-gen runs the sub-stage: from its directory, with
# ROOTFS_DIR set, using the stage's own copy of install-gateway.sh and the
# wheelhouse inside the stage. Then install-gateway.sh from the repository on
# the same root: it must be safe to repeat.
t0=$SECONDS
if "$img/assemble-stage.sh" "$stage" "$wheel_host" >"$logs/install.log" 2>&1 &&
    (cd "$stage/00-gateway" && ROOTFS_DIR="$work" timeout "$t_install" ./00-run.sh) >>"$logs/install.log" 2>&1; then
    record PASS "pi-gen stage 00-run.sh -> install-gateway.sh" "$((SECONDS - t0)) s"
else
    fatal "pi-gen stage 00-run.sh -> install-gateway.sh" "see logs/install.log"
fi
t0=$SECONDS
if timeout "$t_install" "$img/install-gateway.sh" "$work" "$wheel_host" >"$logs/install-again.log" 2>&1; then
    record PASS "install-gateway.sh again on the same root" "$((SECONDS - t0)) s"
else
    record FAIL "install-gateway.sh again on the same root" "see logs/install-again.log"
fi
if findmnt -rn -o TARGET | grep -qF "$work/"; then
    record FAIL "install-gateway.sh left no mounts behind" "$(findmnt -rn -o TARGET | grep -F "$work/" | tr '\n' ' ')"
else
    record PASS "install-gateway.sh left no mounts behind"
fi

mount -t proc proc "$work/proc"
proc_mounted=1

# --- installed files ------------------------------------------------------
check_files() {
    local bad=()
    same() { cmp -s "$1" "$work$2" || bad+=("$2"); }
    same "$root/etc/systemd/gateway.service" /etc/systemd/system/gateway.service
    same "$root/etc/sysusers.d/gateway.conf" /usr/lib/sysusers.d/gateway.conf
    local f
    for f in "$root"/etc/udev/*.rules; do same "$f" "/etc/udev/rules.d/$(basename "$f")"; done
    for f in "$root"/etc/avahi/*.service; do
        [ -e "$f" ] && same "$f" "/etc/avahi/services/$(basename "$f")"
    done
    same "$img/rootfs/etc/overlayroot.local.conf" /etc/overlayroot.local.conf
    same "$img/rootfs/etc/systemd/system.conf.d/gateway-watchdog.conf" /etc/systemd/system.conf.d/gateway-watchdog.conf
    same "$img/rootfs/etc/systemd/system/gateway.service.d/data-partition.conf" /etc/systemd/system/gateway.service.d/data-partition.conf
    same "$img/rootfs/etc/systemd/system/gateway-firstboot.service" /etc/systemd/system/gateway-firstboot.service
    same "$img/rootfs/usr/local/sbin/gateway-firstboot" /usr/local/sbin/gateway-firstboot
    [ -x "$work/usr/local/sbin/gateway-firstboot" ] || bad+=("gateway-firstboot not executable")
    [ -f "$work/etc/gateway/firstboot.pending" ] || bad+=(/etc/gateway/firstboot.pending)
    [ -f "$work/opt/gateway/README.md" ] || bad+=(/opt/gateway/README.md)
    [ -f "$work/opt/gateway/INSTALLING.md" ] || bad+=(/opt/gateway/INSTALLING.md)
    [ -d "$work/var/lib/gateway" ] || bad+=("/var/lib/gateway (mount point)")
    [ ! -e "$work/var/tmp/gateway-wheelhouse" ] || bad+=("wheelhouse copy left in /var/tmp")
    # The installed configuration starts as etc/gateway.yaml.
    head -c "$(stat -c %s "$root/etc/gateway.yaml")" "$work/etc/gateway/gateway.yaml" |
        cmp -s - "$root/etc/gateway.yaml" || bad+=(/etc/gateway/gateway.yaml)
    grep -qx 'overlayroot="tmpfs:recurse=0"' "$work/etc/overlayroot.local.conf" || bad+=("overlayroot setting")
    local wd
    wd="$(sed -n 's/^RuntimeWatchdogSec=\([0-9]*\)s$/\1/p' "$work/etc/systemd/system.conf.d/gateway-watchdog.conf")"
    [ -n "$wd" ] && [ "$wd" -ge 1 ] && [ "$wd" -le 15 ] || bad+=("RuntimeWatchdogSec must be 1..15 s (bcm2835_wdt)")
    [ "$(grep -c '/var/lib/gateway' "$work/etc/fstab")" = 1 ] &&
        grep -qE '^LABEL=gwdata[[:space:]]+/var/lib/gateway[[:space:]]+ext4[[:space:]]' "$work/etc/fstab" ||
        bad+=("fstab: one LABEL=gwdata line for /var/lib/gateway")
    if [ ${#bad[@]} -eq 0 ]; then
        record PASS "installed files (etc/, image/rootfs/, fstab, overlayroot, watchdog $wd s)"
    else
        record FAIL "installed files" "${bad[*]}"
    fi
}
check_files

check_boot_files() {
    local bad=() line cfg="$work/boot/firmware/config.txt" cmd="$work/boot/firmware/cmdline.txt"
    # Every overlay line of board/README.md's wiring block, once.
    while read -r line; do
        [ "$(grep -cxF "$line" "$cfg")" = 1 ] || bad+=("config.txt: $line")
    done < <(grep -E '^dtoverlay=' "$root/board/README.md")
    [ "$(grep -cx 'dtparam=watchdog=on' "$cfg")" = 1 ] || bad+=("config.txt: dtparam=watchdog=on")
    [ "$(grep -c '^# BEGIN print-gateway' "$cfg")" = 1 ] || bad+=("config.txt: one gateway block")
    head -c "$(stat -c %s "$img/check/config.txt")" "$cfg" | cmp -s - "$img/check/config.txt" ||
        bad+=("config.txt: pi-gen's lines changed")
    [ "$(wc -l <"$cmd")" = 1 ] || bad+=("cmdline.txt: not one line")
    grep -q 'raspberrypi-sys-mods/firstboot' "$cmd" && bad+=("cmdline.txt: still has init=.../firstboot")
    [ "$(grep -o 'overlayroot=disabled' "$cmd" | wc -l)" = 1 ] || bad+=("cmdline.txt: overlayroot=disabled once")
    grep -q 'root=ROOTDEV rootfstype=ext4' "$cmd" || bad+=("cmdline.txt: pi-gen's root= lost")
    if [ ${#bad[@]} -eq 0 ]; then
        record PASS "boot files: config.txt overlays + watchdog, cmdline.txt first boot" "$(cat "$cmd")"
    else
        record FAIL "boot files" "${bad[*]}"
    fi
}
check_boot_files

# --- user, units, configuration, venv ---------------------------------------------
if gw_uid="$(in_root id -u gateway)" && gw_gid="$(in_root id -g gateway)" &&
    groups="$(in_root id -nG gateway)" && [[ " $groups " == *" dialout "* ]] &&
    [[ " $groups " == *" input "* ]]; then
    gw_groups="$(in_root id -G gateway | tr ' ' ',')"
    record PASS "service user gateway" "uid $gw_uid, groups: $groups"
else
    fatal "service user gateway (member of dialout and input)" "${groups:-no such user}"
fi

if enabled="$(in_root systemctl is-enabled gateway.service gateway-firstboot.service 2>&1)" &&
    [ "$(echo "$enabled" | grep -cx enabled)" = 2 ]; then
    record PASS "gateway.service and gateway-firstboot.service enabled"
else
    record FAIL "units enabled" "$(echo "$enabled" | tr '\n' ' ')"
fi

# The installed configuration, loaded by the installed code as gateway run
# would; it must carry the appliance's values and the image's front panel.
if out="$(in_root /opt/gateway/venv/bin/python -c '
from pathlib import Path
from gateway.config import load_config
c = load_config(Path("/etc/gateway/gateway.yaml"))
assert str(c.state_dir) == "/var/lib/gateway", c.state_dir
assert c.ingest.listen == ("0.0.0.0:50001",), c.ingest.listen
assert c.board.button.device == "reprint", c.board.button.device
assert c.board.leds.status == "/sys/class/leds/gw-status", c.board.leds.status
print("state_dir", c.state_dir, "listen", ",".join(c.ingest.listen))
' 2>&1)"; then
    record PASS "installed /etc/gateway/gateway.yaml loads" "$out, board: reprint + gw-status"
else
    record FAIL "installed /etc/gateway/gateway.yaml loads" "$(echo "$out" | tail -n 1)"
fi

version="$(cd "$root" && .venv/bin/python -c 'import gateway; print(gateway.__version__)')"
if out="$(in_root /opt/gateway/venv/bin/gateway --version 2>&1)" &&
    [ "$out" = "gateway $version" ]; then
    record PASS "gateway --version" "$out"
else
    record FAIL "gateway --version" "$out (expected gateway $version)"
fi

if out="$(in_root /opt/gateway/venv/bin/pip check --disable-pip-version-check 2>&1)" &&
    out2="$(in_root /opt/gateway/venv/bin/pip freeze --disable-pip-version-check --all 2>&1)"; then
    record PASS "venv consistent (pip check)" "$(grep -v -E '^(pip|setuptools)==' <<<"$out2" | tr '\n' ' ')"
else
    record FAIL "venv consistent (pip check)" "$out"
fi

# --- the gateway itself, as the service user -----------------------------------
rm -rf "$work$fresh" "$work$smoke"
install -d -o "$gw_uid" -g "$gw_gid" -m 0750 "$work$fresh" "$work$smoke" "$work$smoke/state"

if out="$(as_gateway /opt/gateway/venv/bin/gateway verify --state "$fresh" 2>&1)"; then
    record PASS "gateway verify on a fresh state directory" "$out"
else
    record FAIL "gateway verify on a fresh state directory" "$out"
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work$smoke/gateway.yaml" <<EOF
# make image-check: a short run with no printers.
state_dir: $smoke/state
ingest:
  listen: ["127.0.0.1:$port"]
EOF
printf '%s\n' '{"event_type":"subscription_created","timestamp":"2026-11-23T10:00:00Z","subscription_id":42}' \
    >"$work$smoke/events.ndjson"
chmod 0644 "$work$smoke/gateway.yaml" "$work$smoke/events.ndjson"

# The check functions below run in this shell (not in $(...)) so that the
# processes and devices they start are known to cleanup; errexit does not
# apply inside them (they are called from if), hence the explicit returns.
# Each prints its result as its last line.
out_file="$build/check.out"
last_line() { tail -n 1 "$out_file"; }

smoke_run() {
    # Not under timeout: SIGTERM must reach the gateway itself, and the
    # deadlines below bound every wait.
    chroot --userspec="$gw_uid:$gw_gid" --groups="$gw_groups" "$work" \
        /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
        /opt/gateway/venv/bin/gateway run --config "$smoke/gateway.yaml" \
        >"$logs/gateway-run.log" 2>&1 &
    gw_pid=$!
    local deadline=$((SECONDS + t_ready))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$gw_pid" 2>/dev/null; then
            echo "gateway run exited before listening"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "not listening on 127.0.0.1:$port after $t_ready s"
            return 1
        fi
        sleep 0.2
    done
    if ! as_gateway_for "$t_send" /opt/gateway/venv/bin/gateway send --ack --app image-check \
        --port "$port" --timeout 10 "$smoke/events.ndjson" >"$logs/gateway-send.log" 2>&1; then
        echo "gateway send --ack failed: $(tail -n 1 "$logs/gateway-send.log")"
        return 1
    fi
    kill -TERM "$gw_pid" || return 1
    deadline=$((SECONDS + t_stop))
    while kill -0 "$gw_pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "still running $t_stop s after SIGTERM"
            return 1
        fi
        sleep 0.2
    done
    local rc=0
    wait "$gw_pid" || rc=$?
    gw_pid=""
    if [ "$rc" != 0 ]; then
        echo "gateway run exited $rc after SIGTERM"
        return 1
    fi
    echo "port $port, one event acknowledged, exit 0 on SIGTERM"
}
if smoke_run >"$out_file" 2>&1; then
    record PASS "gateway run: one event with send --ack, SIGTERM" "$(last_line)"
else
    record FAIL "gateway run: one event with send --ack, SIGTERM" "$(last_line); see logs/gateway-run.log"
fi

if out="$(as_gateway /opt/gateway/venv/bin/gateway verify --state "$smoke/state" 2>&1)" &&
    events="$(as_gateway /opt/gateway/venv/bin/python -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin]
events = [r for r in rows if r.get("kind") == "event"]
assert len(events) == 1 and events[0]["event"]["subscription_id"] == 42, events
print(len(rows), "entries,", len(events), "event")
' < <(as_gateway /opt/gateway/venv/bin/gateway export --state "$smoke/state") 2>&1)"; then
    record PASS "gateway verify + export after the run" "$out; $events"
else
    record FAIL "gateway verify + export after the run" "$out ${events:-}"
fi

# --- systemd's view of the installed units ------------------------------------
if out="$(in_root systemd-analyze verify \
    /etc/systemd/system/gateway.service /etc/systemd/system/gateway-firstboot.service 2>&1)" &&
    [ -z "$out" ]; then
    record PASS "systemd-analyze verify (in the root): gateway.service + drop-in, gateway-firstboot.service"
else
    echo "$out" >"$logs/systemd-analyze.log"
    record FAIL "systemd-analyze verify (in the root)" "$(head -n 3 <<<"$out" | tr '\n' ' ')"
fi

# --- the native ingest core, in the root ----------------------------------------
# The installed package (not a source tree): only tests/ and pyproject.toml
# (pytest's settings) are copied in, and the test libraries go to a
# directory of their own on PYTHONPATH, so the gateway venv stays as the
# image has it.
in_root_for() {
    local limit=$1
    shift
    timeout --kill-after=10 "$limit" chroot "$work" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}
native_check() {
    local out
    out="$(in_root /opt/gateway/venv/bin/python -c '
import gateway, gateway._native
from gateway.ingest import fast
assert gateway.__file__.startswith("/opt/gateway/venv/"), gateway.__file__
assert fast.native_module() is not None, "fast.native_module() is None"
print(gateway._native.__file__.rsplit("/", 1)[-1])
' 2>&1)" || { echo "import gateway._native: $(tail -n 1 <<<"$out")"; return 1; }
    echo "$out"
    grep -q '"ingest_path": *"native"' "$logs/gateway-run.log" ||
        { echo "the smoke run's gateway ready record has no ingest_path native"; return 1; }
    echo "gateway run: ingest_path native"
}
if [ "$wheel_kind" = pure ]; then
    record SKIP "native ingest core" "GATEWAY_WHEEL=pure: the pure-Python wheel has none"
elif native_check >"$out_file" 2>&1; then
    record PASS "import gateway._native in the installed venv; the smoke run took the native path" "$(head -n 1 "$out_file")"
else
    record FAIL "native ingest core in the installed venv" "$(last_line)"
fi
cp "$out_file" "$logs/native-import.log"

native_tests() {
    [ -n "$testhouse" ] || { echo "no test wheelhouse"; return 1; }
    rm -rf "$work$tests_in" "$work$testlibs_in" "$work$testhouse_in"
    mkdir -p "$work$tests_in"
    if ! { cp -r "$root/tests" "$root/pyproject.toml" "$work$tests_in/" &&
        find "$work$tests_in" -name __pycache__ -type d -prune -exec rm -rf {} + &&
        cp -r "$testhouse" "$work$testhouse_in"; }; then
        echo "copying the tests in failed"
        return 1
    fi
    # shellcheck disable=SC2086  # one requirement per word
    in_root_for "$t_install" /opt/gateway/venv/bin/pip install --quiet --disable-pip-version-check \
        --no-index --find-links "$testhouse_in" --target "$testlibs_in" $test_reqs ||
        { echo "installing the test libraries (no index) failed"; return 1; }
    local t0=$SECONDS rc=0 cap="at most $diff_examples examples each"
    [ "$diff_examples" != 0 ] || cap="examples as written"
    in_root_for "$t_tests" /usr/bin/env GATEWAY_REQUIRE_NATIVE=1 \
        GATEWAY_DIFF_MAX_EXAMPLES="$diff_examples" PYTHONPATH="$testlibs_in" \
        /usr/bin/env --chdir="$tests_in" /opt/gateway/venv/bin/python -m pytest -q -m "not slow" \
        -p no:cacheprovider tests/test_native_differential.py tests/test_native_path.py || rc=$?
    rm -rf "$work$tests_in" "$work$testlibs_in" "$work$testhouse_in"
    [ "$rc" = 0 ] || { echo "pytest exited $rc after $((SECONDS - t0)) s"; return 1; }
    echo "$(grep -E '^[0-9]+ passed' "$out_file" | tail -n 1 | sed 's/=//g'), property tests: $cap, $((SECONDS - t0)) s"
}
if [ "$wheel_kind" = pure ]; then
    record SKIP "differential test of the native core" "GATEWAY_WHEEL=pure"
elif native_tests >"$out_file" 2>&1; then
    record PASS "tests/test_native_differential.py + test_native_path.py against the installed package (GATEWAY_REQUIRE_NATIVE=1)" "$(last_line)"
else
    record FAIL "native differential test in the root" "$(last_line); see logs/native-tests.log"
fi
cp "$out_file" "$logs/native-tests.log"

umount "$work/proc"
proc_mounted=""

# --- the data partition -----------------------------------------------------
# A synthetic image laid out as pi-gen's export-image/prerun.sh makes it
# (8 MiB alignment, 512 MiB FAT boot, ext4 root labelled rootfs), with a small
# root; then add-data-partition.sh, as postrun.sh runs it on the real image.
mib=$((1024 * 1024))
align=$((8 * mib))
boot_size=$((512 * mib))
root_size=$((64 * mib))
data_mib=64
syn="$build/synthetic.img"
part_check() {
    rm -f "$syn"
    truncate -s $((align + boot_size + root_size)) "$syn" &&
        parted -s "$syn" mklabel msdos &&
        parted -s "$syn" unit B mkpart primary fat32 "$align" $((align + boot_size - 1)) &&
        parted -s "$syn" unit B mkpart primary ext4 $((align + boot_size)) $((align + boot_size + root_size - 1)) &&
        mke2fs -q -F -t ext4 -L rootfs -E offset=$((align + boot_size)),nodiscard "$syn" $((root_size / 1024))k ||
        { echo "could not make the synthetic image"; return 1; }
    "$img/add-data-partition.sh" "$syn" "$data_mib" || { echo "add-data-partition.sh failed"; return 1; }
    local table p3 start size
    table="$(parted -m -s "$syn" unit B print)" || return 1
    p3="$(grep '^3:' <<<"$table")" || { echo "no partition 3"; return 1; }
    start="$(cut -d: -f2 <<<"$p3")"; start=${start%B}
    size="$(cut -d: -f4 <<<"$p3")"; size=${size%B}
    [ $((start % align)) = 0 ] || { echo "partition 3 not 8 MiB aligned"; return 1; }
    [ "$size" = $((data_mib * mib)) ] || { echo "partition 3 is $size bytes"; return 1; }
    e2fsck -f -n "$syn?offset=$((align + boot_size))" || { echo "root file system damaged"; return 1; }
    e2fsck -f -n "$syn?offset=$start" || { echo "data file system not clean"; return 1; }
    [ "$(dumpe2fs -h "$syn?offset=$start" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')" = gwdata ] ||
        { echo "label is not gwdata"; return 1; }
    # A second run must refuse: the image already has its third partition.
    if "$img/add-data-partition.sh" "$syn" "$data_mib"; then
        echo "a second add-data-partition.sh was not refused"
        return 1
    fi
    echo "partition 3 at $((start / mib)) MiB, $data_mib MiB, ext4 gwdata; root file system intact; a second run refused"
}
if part_check >"$out_file" 2>&1; then
    record PASS "add-data-partition.sh on a pi-gen-like image" "$(last_line)"
else
    record FAIL "add-data-partition.sh on a pi-gen-like image" "$(last_line); see logs/data-partition.log"
fi
cp "$out_file" "$logs/data-partition.log"

# gateway-firstboot against a loop device: the image copied to a larger
# "card", partition 3 mounted as fstab would; the script must unmount it,
# grow partition and file system to the end, drop overlayroot=disabled and
# remove the marker; a second run must change nothing and succeed.
firstboot_check() {
    local card="$build/card.img" cmd="$build/cmdline.txt" marker="$build/firstboot.pending"
    [ -f "$syn" ] || { echo "no synthetic image (previous check failed)"; return 1; }
    cp --sparse=always "$syn" "$card" && truncate -s +512M "$card" || return 1
    cp "$img/check/cmdline.txt" "$cmd" || return 1
    sed -i -e '1s# init=/usr/lib/raspberrypi-sys-mods/firstboot##' -e '1s/$/ overlayroot=disabled/' "$cmd"
    touch "$marker"
    loop="$(losetup -f --show -P "$card")" || { echo "losetup failed"; return 1; }
    # Some kernels (or sandboxes) do not scan the table on attach: ask again.
    [ -b "${loop}p3" ] || partx -a "$loop" || true
    local i
    for ((i = 0; i < 50; i++)); do [ -b "${loop}p3" ] && break; sleep 0.1; done  # up to 5 s for the node
    [ -b "${loop}p3" ] || { echo "no ${loop}p3 node"; return 1; }
    loop_mnt="$(mktemp -d)" && mount "${loop}p3" "$loop_mnt" || { echo "mount failed"; return 1; }
    local env=(GATEWAY_DATA_DEV="${loop}p3" GATEWAY_CMDLINE="$cmd"
        GATEWAY_FIRSTBOOT_MARKER="$marker" GATEWAY_FIRSTBOOT_REBOOT=0)
    env "${env[@]}" timeout "$t_loop" "$img/rootfs/usr/local/sbin/gateway-firstboot" ||
        { echo "first run failed"; return 1; }
    if findmnt -n -S "${loop}p3" >/dev/null; then echo "data partition still mounted"; return 1; fi
    rmdir "$loop_mnt"; loop_mnt=""
    env "${env[@]}" timeout "$t_loop" "$img/rootfs/usr/local/sbin/gateway-firstboot" ||
        { echo "second run failed"; return 1; }
    local end disk_end blocks
    end="$(parted -m -s "$card" unit s print | grep '^3:' | cut -d: -f3)"; end=${end%s}
    disk_end=$(($(stat -c %s "$card") / 512 - 1))
    # growpart leaves at most the alignment slack (1 MiB = 2048 sectors).
    [ $((disk_end - end)) -lt 2048 ] || { echo "partition 3 ends at sector $end of $disk_end"; return 1; }
    blocks="$(dumpe2fs -h "${loop}p3" 2>/dev/null | sed -n 's/^Block count: *//p')"
    [ "${blocks:-0}" -gt $((data_mib * mib / 4096)) ] || { echo "file system not grown (${blocks:-?} blocks)"; return 1; }
    if grep -q overlayroot "$cmd"; then echo "overlayroot=disabled still in cmdline.txt"; return 1; fi
    [ ! -e "$marker" ] || { echo "marker not removed"; return 1; }
    partx -d "$loop" 2>/dev/null || true
    losetup -d "$loop" && loop="" || return 1
    echo "grown from $data_mib to $((blocks * 4096 / mib)) MiB on a $(($(stat -c %s "$card") / mib)) MiB card; cmdline.txt: $(cat "$cmd")"
    rm -f "$card" "$cmd"
}
if [ "$(findmnt -n -o FSTYPE --mountpoint /)" = overlay ]; then
    record SKIP "gateway-firstboot on a loop device" "this machine's / is an overlay; the script refuses to run there"
elif ! losetup -f >/dev/null 2>&1; then
    record SKIP "gateway-firstboot on a loop device" "no loop devices here"
elif firstboot_check >"$out_file" 2>&1; then
    record PASS "gateway-firstboot on a loop device (unmount, growpart, e2fsck, resize2fs, cmdline.txt, marker; run twice)" "$(last_line)"
else
    record FAIL "gateway-firstboot on a loop device" "$(last_line); see logs/firstboot.log"
fi
cp "$out_file" "$logs/firstboot.log"
rm -f "$syn" "$out_file"

summary
[ "$failed" = 0 ]
