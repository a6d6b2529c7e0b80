#!/usr/bin/env bash
# Install the Print Gateway appliance into a root file system directory.
#
#   image/install-gateway.sh ROOTFS WHEELHOUSE
#
# ROOTFS     a Debian bookworm root (pi-gen's stage root for the SD card image,
#            or the debootstrap root of make image-check)
# WHEELHOUSE made by image/wheelhouse.sh for ROOTFS's architecture
#
# Runs on the build host as root; the steps that must run inside the target
# (apt, the virtual environment, the service user, enabling units) go through
# chroot. The pi-gen stage (stage-gateway/00-gateway/00-run.sh) and
# make image-check both call this script, so the check exercises the very
# steps that build the image.
#
# It is safe to run again on the same root: every step replaces what an
# earlier run left.
set -euo pipefail

die() { echo "install-gateway: $*" >&2; exit 1; }
say() { echo "install-gateway: $*"; }

if [ $# -ne 2 ]; then
    echo "usage: $0 ROOTFS WHEELHOUSE" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || die "must run as root (chroot, mounts, file ownership)"
rootfs="$(realpath "$1")"
wheelhouse="$(realpath "$2")"
[ "$rootfs" != / ] || die "refusing to install into the host's own root file system"
[ -d "$rootfs/etc" ] && [ -d "$rootfs/usr" ] || die "$rootfs does not look like a root file system"
[ -f "$wheelhouse/requirements.txt" ] || die "$wheelhouse/requirements.txt missing (make it with image/wheelhouse.sh)"

# The repository (or, inside pi-gen, the stage's copy of the parts of it that
# are needed: image/, etc/, README.md, docs/).
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
img="$src/image"

# The wheelhouse is copied here inside the root for pip, and removed again.
wheel_stage=/var/tmp/gateway-wheelhouse

# --- mounts ---------------------------------------------------------------
# Only what the chroot steps need, and only if the caller (pi-gen mounts its
# own) has not mounted it already; exactly what was mounted here is unmounted
# on any exit. /dev is never bind-mounted from the host: a private tmpfs with
# the few nodes needed is enough, and cannot take the host's /dev with it if
# the root directory is ever deleted while mounted.
mounted=()
cleanup() {
    local i
    rm -rf "${rootfs:?}$wheel_stage"
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
    done
}
trap cleanup EXIT
# A signal (a timeout, Ctrl-C) ends the script through exit, so that the
# EXIT trap unmounts.
trap 'exit 130' INT
trap 'exit 143' TERM

if ! mountpoint -q "$rootfs/proc"; then
    mount -t proc proc "$rootfs/proc"
    mounted+=("$rootfs/proc")
fi
if [ ! -c "$rootfs/dev/null" ]; then
    # 1 MiB: device nodes take no space; the limit only keeps mistakes small.
    mount -t tmpfs -o mode=0755,size=1m gateway-dev "$rootfs/dev"
    mounted+=("$rootfs/dev")
    mknod -m 0666 "$rootfs/dev/null" c 1 3
    mknod -m 0666 "$rootfs/dev/zero" c 1 5
    mknod -m 0666 "$rootfs/dev/full" c 1 7
    mknod -m 0666 "$rootfs/dev/random" c 1 8
    mknod -m 0666 "$rootfs/dev/urandom" c 1 9
    mknod -m 0666 "$rootfs/dev/tty" c 5 0
fi
# apt and dpkg want pseudo-terminals; a new devpts instance is private to
# this mount, like the tmpfs above.
if [ -d "$rootfs/dev/pts" ] && ! mountpoint -q "$rootfs/dev/pts"; then
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 gateway-devpts "$rootfs/dev/pts"
    mounted+=("$rootfs/dev/pts")
fi

# Commands inside the root get a clean environment: nothing from the build
# host's shell (PIP_*, PYTHON*, LC_*) may change what pip or apt do there.
in_root() {
    chroot "$rootfs" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# --- operating system packages ------------------------------------------
# python3, python3-venv: the gateway's virtual environment (bookworm: 3.11).
# overlayroot: the read-only root file system.
# cloud-guest-utils: growpart, used once by gateway-firstboot.
# Raspberry Pi OS Lite already has python3 and python3-venv; a debootstrap
# root (make image-check) has them from debootstrap --include.
packages=(python3 python3-venv overlayroot cloud-guest-utils)
missing=()
for p in "${packages[@]}"; do
    if ! in_root dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    # Retries=3 and a 60 s timeout per connection: a flaky mirror costs a few
    # minutes at most instead of hanging the build.
    apt_opts=(-o Acquire::Retries=3 -o Acquire::http::Timeout=60 -q)
    in_root apt-get "${apt_opts[@]}" update >/dev/null
    in_root apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- service user -----------------------------------------------------------
install -D -m 0644 "$src/etc/sysusers.d/gateway.conf" "$rootfs/usr/lib/sysusers.d/gateway.conf"
if [ -x "$rootfs/usr/bin/systemd-sysusers" ] || [ -x "$rootfs/bin/systemd-sysusers" ]; then
    in_root systemd-sysusers /usr/lib/sysusers.d/gateway.conf
else
    # Without systemd in the root: the same user with useradd. This mirrors
    # etc/sysusers.d/gateway.conf, which is checked to still say what is
    # done here.
    grep -q '^u gateway - "Print Gateway" /var/lib/gateway$' "$src/etc/sysusers.d/gateway.conf" &&
        grep -q '^m gateway dialout$' "$src/etc/sysusers.d/gateway.conf" &&
        grep -q '^m gateway input$' "$src/etc/sysusers.d/gateway.conf" ||
        die "etc/sysusers.d/gateway.conf changed: update the useradd fallback in $0"
    say "no systemd-sysusers in the root: creating the user with useradd"
    in_root groupadd -f --system dialout
    in_root groupadd -f --system input
    if ! in_root getent passwd gateway >/dev/null; then
        in_root useradd --system --user-group --home-dir /var/lib/gateway --no-create-home \
            --shell /usr/sbin/nologin --comment "Print Gateway" gateway
    fi
    in_root usermod -a -G dialout,input gateway
fi

# --- the gateway in its own virtual environment -----------------------------
# Made with the target's own python3, then filled from the wheelhouse only
# (--no-index): exactly the wheels in requirements.txt, checked by hash.
# pip compiles the bytecode now; on the read-only root nothing could write it
# later.
rm -rf "$rootfs/opt/gateway/venv" "${rootfs:?}$wheel_stage"
mkdir -p "$rootfs/opt/gateway" "$(dirname "$rootfs$wheel_stage")"
cp -r "$wheelhouse" "$rootfs$wheel_stage"
in_root python3 -m venv /opt/gateway/venv
in_root /opt/gateway/venv/bin/pip install --quiet --disable-pip-version-check --no-input \
    --no-cache-dir --no-index --find-links "$wheel_stage" \
    --require-hashes -r "$wheel_stage/requirements.txt"
rm -rf "${rootfs:?}$wheel_stage"
# What is installed, with hashes: for whoever audits the appliance.
install -m 0644 "$wheelhouse/requirements.txt" "$rootfs/opt/gateway/requirements.txt"
# The unit's Documentation= points here.
install -m 0644 "$src/README.md" "$rootfs/opt/gateway/README.md"
install -m 0644 "$img/INSTALLING.md" "$rootfs/opt/gateway/INSTALLING.md"
rm -rf "$rootfs/opt/gateway/docs"
install -d -m 0755 "$rootfs/opt/gateway/docs"
install -m 0644 "$src"/docs/*.md "$rootfs/opt/gateway/docs/"

# --- configuration and system files from etc/ -----------------------------------
install -D -m 0644 "$src/etc/gateway.yaml" "$rootfs/etc/gateway/gateway.yaml"
# etc/gateway.yaml names the front panel that the image's config.txt overlays
# (below) create; check that it still does, so the two cannot drift apart.
grep -q '^board:' "$rootfs/etc/gateway/gateway.yaml" \
    || die "etc/gateway.yaml has no board: section for the image's front panel"
install -D -m 0644 "$src/etc/systemd/gateway.service" "$rootfs/etc/systemd/system/gateway.service"
install -d -m 0755 "$rootfs/etc/udev/rules.d"
install -m 0644 "$src"/etc/udev/*.rules "$rootfs/etc/udev/rules.d/"
shopt -s nullglob
avahi=("$src"/etc/avahi/*.service)
shopt -u nullglob
if [ ${#avahi[@]} -gt 0 ]; then
    install -d -m 0755 "$rootfs/etc/avahi/services"
    install -m 0644 "${avahi[@]}" "$rootfs/etc/avahi/services/"
fi

# --- appliance: read-only root, watchdog, data partition, first boot ----------
install -m 0644 "$img/rootfs/etc/overlayroot.local.conf" "$rootfs/etc/overlayroot.local.conf"
install -D -m 0644 "$img/rootfs/etc/systemd/system.conf.d/gateway-watchdog.conf" \
    "$rootfs/etc/systemd/system.conf.d/gateway-watchdog.conf"
install -D -m 0644 "$img/rootfs/etc/systemd/system/gateway.service.d/data-partition.conf" \
    "$rootfs/etc/systemd/system/gateway.service.d/data-partition.conf"
install -m 0644 "$img/rootfs/etc/systemd/system/gateway-firstboot.service" \
    "$rootfs/etc/systemd/system/gateway-firstboot.service"
install -D -m 0755 "$img/rootfs/usr/local/sbin/gateway-firstboot" "$rootfs/usr/local/sbin/gateway-firstboot"
cat >"$rootfs/etc/gateway/firstboot.pending" <<'EOF'
While this file exists, gateway-firstboot.service grows the data partition
and then makes the root file system read-only (see /opt/gateway/INSTALLING.md).
EOF

# The data partition (made when the image is exported: add-data-partition.sh)
# by label, so that it does not matter which device the card appears as.
# nofail: if it is missing the system still boots (SSH, logs) and only the
# gateway stays down (its drop-in requires the mount); a 30 s device timeout
# instead of systemd's 90 s, as an SD card partition is there at once or not
# at all. Pass 2: checked by fsck at boot after the root.
fstab_line='LABEL=gwdata  /var/lib/gateway  ext4  defaults,noatime,nofail,x-systemd.device-timeout=30s  0  2'
touch "$rootfs/etc/fstab"
sed -i '\#[[:space:]]/var/lib/gateway[[:space:]]#d' "$rootfs/etc/fstab"
echo "$fstab_line" >>"$rootfs/etc/fstab"
# The mount point must exist in the image: on the read-only root nothing can
# create it at boot.
install -d -m 0755 "$rootfs/var/lib/gateway"

# Raspberry Pi boot files (absent from a debootstrap root).
boot="$rootfs/boot/firmware"
if [ -f "$boot/config.txt" ]; then
    sed -i '/^# BEGIN print-gateway/,/^# END print-gateway/d' "$boot/config.txt"
    cat "$img/config.txt.append" >>"$boot/config.txt"
    say "config.txt: watchdog, button and LED overlays"
else
    say "no /boot/firmware/config.txt in the root (not a Raspberry Pi image): overlays not added"
fi
if [ -f "$boot/cmdline.txt" ]; then
    # The first boot runs with a writable root (overlayroot=disabled) so that
    # the machine id, the SSH host keys and the grown data partition are kept;
    # gateway-firstboot removes the word afterwards.
    # Raspberry Pi OS's own first-boot init (raspberrypi-sys-mods) is dropped:
    # it would try to grow the root partition to the end of the card, which
    # is where the data partition is; the data partition gets that space.
    sed -i -e '1s# init=/usr/lib/raspberrypi-sys-mods/firstboot##' "$boot/cmdline.txt"
    grep -q 'overlayroot=disabled' "$boot/cmdline.txt" || sed -i -e '1s/$/ overlayroot=disabled/' "$boot/cmdline.txt"
    say "cmdline.txt: $(head -n 1 "$boot/cmdline.txt")"
fi

# A swap file would live in the RAM overlay of the read-only root: no use.
if [ -e "$rootfs/lib/systemd/system/dphys-swapfile.service" ]; then
    in_root systemctl disable dphys-swapfile.service
fi

in_root systemctl enable gateway.service gateway-firstboot.service
say "installed: $(in_root /opt/gateway/venv/bin/gateway --version)"
