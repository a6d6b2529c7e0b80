#!/usr/bin/env bash
# make image: build the Raspberry Pi SD card image (Raspberry Pi OS bookworm
# Lite, arm64, plus the gateway) with pi-gen at a pinned revision.
#
#   image/build-image.sh
#
# 1. the aarch64 wheelhouse (image/wheelhouse.sh: the gateway wheel with
#    its native core, built by image/native-wheel.sh in a bookworm arm64 root
#    under qemu, as root; GATEWAY_WHEEL=pure: the pure-Python wheel of make
#    wheel instead; and its dependencies' cp311 manylinux aarch64 wheels);
# 2. pi-gen cloned at the pinned commit into build/image/pi-gen;
# 3. the gateway stage (image/stage-gateway) copied in, with the parts of
#    this repository it installs from and the wheelhouse; pi-gen's config
#    and postrun.sh (adds the data partition, compresses) written;
# 4. pi-gen's build-docker.sh (default) or build.sh (PIGEN_MODE=native).
#
# Result: build/image/pi-gen/deploy/<date>-print-gateway.img.xz (+ .bmap,
# .sha256, pi-gen's .info and build log). Requirements, time and disk space:
# image/README.md.
#
# Settings (environment):
#   PIGEN_MODE=docker|native|prepare
#                                  docker (default): needs a running Docker;
#                                  native: root on Debian with pi-gen's
#                                  dependencies (pi-gen's depends file);
#                                  prepare: steps 1-3 only, to inspect the
#                                  pi-gen tree or run pi-gen by hand
#   PI_GEN_REPO=URL                where to fetch pi-gen (a mirror); the
#                                  pinned commit is checked all the same
#   GATEWAY_SSH_PUBKEY_FILE=FILE   authorized_keys for the admin user; SSH is
#                                  enabled with keys only. Unset: SSH off.
#   GATEWAY_ADMIN_USER=gwadmin     the admin (sudo) user
#   GATEWAY_ADMIN_PASSWORD=...     its password; unset: a random one, written
#                                  to build/image/admin-password (mode 0600)
#   GATEWAY_HOSTNAME=print-gateway
#   GATEWAY_TIMEZONE=Etc/UTC       the daily report's day is the local day:
#                                  set the branch's zone
#   GATEWAY_LOCALE=en_GB.UTF-8  GATEWAY_KEYMAP=gb  GATEWAY_KEYBOARD_LAYOUT="English (UK)"
#   GATEWAY_WPA_COUNTRY=           WLAN country (e.g. GB); unset: WLAN stays
#                                  blocked (the appliance is wired)
#   GATEWAY_DATA_MIB=256           data partition size in the image (it grows
#                                  to the card at first boot)
#   GATEWAY_WHEEL=native|pure      native (default): the wheel with the C
#                                  ingest core (image/native-wheel.sh: root,
#                                  qemu-user-static, binfmt_misc on a PC);
#                                  pure: the pure-Python wheel (make wheel)
#   GATEWAY_NATIVE_ROOT=DIR        where native-wheel.sh caches its arm64 root
#                                  (/var/cache/print-gateway/native-root-bookworm-arm64)
#   CONTINUE=1, PRESERVE_CONTAINER=1   passed to build-docker.sh
set -euo pipefail

# --- pi-gen pin ---------------------------------------------------------------
# The newest Raspberry Pi OS bookworm arm64 release tag of pi-gen when this was
# written; the commit is the pin (a tag can be moved), the tag only fetches it.
# It is also the tip of pi-gen's bookworm-arm64 branch at that time.
pi_gen_repo=${PI_GEN_REPO:-https://github.com/RPi-Distro/pi-gen.git}
pi_gen_tag=2026-06-18-raspios-bookworm-arm64
pi_gen_commit=d7a31c6aa09f4b867902c51da2b45807c0a1709e

die() { echo "build-image: $*" >&2; exit 1; }
say() { echo "build-image: $*"; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
img="$root/image"
build="$root/build/image"
pigen="$build/pi-gen"
mode=${PIGEN_MODE:-docker}
data_mib=${GATEWAY_DATA_MIB:-256}

case "$mode" in
    docker)
        command -v docker >/dev/null || die "PIGEN_MODE=docker needs docker (or use PIGEN_MODE=native as root on Debian)"
        docker info >/dev/null 2>&1 || sudo -n docker info >/dev/null 2>&1 ||
            die "the Docker daemon is not reachable"
        ;;
    native)
        [ "$(id -u)" = 0 ] || die "PIGEN_MODE=native: pi-gen's build.sh must run as root"
        ;;
    prepare) ;;
    *) die "PIGEN_MODE must be docker, native or prepare" ;;
esac
command -v git >/dev/null || die "git is needed to fetch pi-gen"
[[ "$data_mib" =~ ^[0-9]+$ ]] || die "GATEWAY_DATA_MIB must be a number of MiB"
if [ -n "${GATEWAY_SSH_PUBKEY_FILE:-}" ]; then
    [ -s "$GATEWAY_SSH_PUBKEY_FILE" ] || die "GATEWAY_SSH_PUBKEY_FILE: $GATEWAY_SSH_PUBKEY_FILE is empty or missing"
fi
mkdir -p "$build"

# pi-gen keeps a root file system per stage plus the image: about 15 GB in
# its work directory (or Docker's volume); warn early rather than fail late.
need_kb=$((20 * 1024 * 1024))
free_kb="$(df -Pk "$build" | awk 'NR == 2 {print $4}')"
if [ "$free_kb" -lt "$need_kb" ]; then
    say "warning: $((free_kb / 1024 / 1024)) GB free under $build; pi-gen needs about 20 GB (Docker: where Docker keeps its volumes)"
fi

# --- 1. wheelhouse ------------------------------------------------------------
"$img/wheelhouse.sh" "$build/wheelhouse-aarch64" aarch64

# --- 2. pi-gen at the pinned commit --------------------------------------------
if [ -d "$pigen/.git" ] && [ "$(git -C "$pigen" rev-parse HEAD)" = "$pi_gen_commit" ]; then
    say "pi-gen $pi_gen_tag already in $pigen"
    # Back to pristine, keeping pi-gen's work and deploy directories (native
    # builds: the per-stage roots).
    git -C "$pigen" reset --quiet --hard
    git -C "$pigen" clean --quiet -ffdx -e /work/ -e /deploy/
else
    # A pi-gen run that died may have left its chroot mounts (a bind mount of
    # the host's /dev among them) under work/: never delete through those.
    if findmnt -rn -o TARGET | grep -qF "$pigen/"; then
        die "file systems are still mounted under $pigen (a pi-gen run that died?): unmount them first"
    fi
    rm -rf "$pigen"
    git clone --quiet --depth 1 --branch "$pi_gen_tag" "$pi_gen_repo" "$pigen"
    got="$(git -C "$pigen" rev-parse HEAD)"
    [ "$got" = "$pi_gen_commit" ] ||
        die "pi-gen tag $pi_gen_tag is now $got, not the pinned $pi_gen_commit: check the change, then update the pin"
fi

# --- 3. the gateway stage, config, postrun.sh -----------------------------------
"$img/assemble-stage.sh" "$pigen/stage-gateway" "$build/wheelhouse-aarch64"
# Only this stage's image: no separate Lite image from stage2.
touch "$pigen/stage2/SKIP_IMAGES"
install -m 0755 "$img/pi-gen-postrun.sh" "$pigen/postrun.sh"

admin_user=${GATEWAY_ADMIN_USER:-gwadmin}
admin_password=${GATEWAY_ADMIN_PASSWORD:-}
if [ -z "$admin_password" ]; then
    # 18 random bytes: a 24-character password nobody has to remember, for
    # the console only; SSH takes keys.
    admin_password="$(head -c 18 /dev/urandom | base64)"
    (umask 077 && echo "$admin_password" >"$build/admin-password")
    say "admin password for '$admin_user' written to ${build#"$root"/}/admin-password"
fi
if [ -n "${GATEWAY_SSH_PUBKEY_FILE:-}" ]; then
    ssh_settings=(ENABLE_SSH=1 PUBKEY_ONLY_SSH=1
        "PUBKEY_SSH_FIRST_USER=$(printf '%q' "$(cat "$GATEWAY_SSH_PUBKEY_FILE")")")
else
    say "warning: GATEWAY_SSH_PUBKEY_FILE not set: SSH is disabled in the image (console login only)"
    ssh_settings=(ENABLE_SSH=0)
fi

q() { printf '%q' "$1"; }
{
    echo "# Written by image/build-image.sh; pi-gen's README.md explains each setting."
    echo "IMG_NAME=print-gateway"
    echo "PI_GEN_RELEASE=$(q "Print Gateway (pi-gen $pi_gen_tag)")"
    echo "RELEASE=bookworm"
    echo "STAGE_LIST=$(q "stage0 stage1 stage2 stage-gateway")"
    echo "# Uncompressed, so that postrun.sh can add the data partition; it compresses."
    echo "DEPLOY_COMPRESSION=none"
    echo "TARGET_HOSTNAME=$(q "${GATEWAY_HOSTNAME:-print-gateway}")"
    echo "FIRST_USER_NAME=$(q "$admin_user")"
    echo "FIRST_USER_PASS=$(q "$admin_password")"
    echo "# No first-boot user wizard: the appliance runs headless."
    echo "DISABLE_FIRST_BOOT_USER_RENAME=1"
    printf '%s\n' "${ssh_settings[@]}"
    echo "LOCALE_DEFAULT=$(q "${GATEWAY_LOCALE:-en_GB.UTF-8}")"
    echo "KEYBOARD_KEYMAP=$(q "${GATEWAY_KEYMAP:-gb}")"
    echo "KEYBOARD_LAYOUT=$(q "${GATEWAY_KEYBOARD_LAYOUT:-English (UK)}")"
    echo "TIMEZONE_DEFAULT=$(q "${GATEWAY_TIMEZONE:-Etc/UTC}")"
    if [ -n "${GATEWAY_WPA_COUNTRY:-}" ]; then echo "WPA_COUNTRY=$(q "$GATEWAY_WPA_COUNTRY")"; fi
    echo "# Read by postrun.sh (exported: pi-gen only exports its own settings)."
    echo "export GATEWAY_DATA_MIB=$data_mib"
} >"$pigen/config"
chmod 0600 "$pigen/config"

# --- 4. pi-gen -------------------------------------------------------------------
if [ "$mode" = prepare ]; then
    say "prepared $pigen (config, stage-gateway, postrun.sh); build with: cd $pigen && ./build-docker.sh (or, as root, ./build.sh)"
    exit 0
fi
say "pi-gen $pi_gen_tag ($pi_gen_commit), $mode build; this takes a long while (image/README.md)"
cd "$pigen"
if [ "$mode" = docker ]; then
    # build-docker.sh copies deploy/ out of its container into the current
    # directory.
    ./build-docker.sh
else
    ./build.sh
fi

shopt -s nullglob
result=("$pigen"/deploy/*-print-gateway.img.xz)
[ ${#result[@]} -gt 0 ] || die "no image in $pigen/deploy"
say "done: ${result[-1]}"
