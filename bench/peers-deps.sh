#!/bin/sh
# Dependencies of `make bench-peers`: rsyslogd and its RELP input module (imrelp).
#
# The peers benchmark runs its own rsyslogd instances in the foreground, on
# loopback ports and in temporary directories; it only needs the binaries.
# Installing the Debian packages may start the distribution's own rsyslog service
# (where an init system does so); the benchmark neither uses nor stops it.
#
# Exit 0 when both are present (installing them first when running as root),
# non-zero with what to install otherwise.
set -eu

PACKAGES="rsyslog rsyslog-relp"

have_rsyslogd() {
    command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ]
}

have_imrelp() {
    # The module directory is multiarch (/usr/lib/<triplet>/rsyslog); ask dpkg where
    # the package put it, and fall back to a glob for non-dpkg installs.
    if command -v dpkg >/dev/null 2>&1 && dpkg -L rsyslog-relp 2>/dev/null | grep -q '/imrelp\.so$'; then
        return 0
    fi
    for f in /usr/lib/*/rsyslog/imrelp.so /usr/lib/rsyslog/imrelp.so /usr/lib64/rsyslog/imrelp.so; do
        [ -e "$f" ] && return 0
    done
    return 1
}

if have_rsyslogd && have_imrelp; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-peers needs rsyslogd and its imrelp module; as root run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends $PACKAGES" >&2
    exit 1
fi

echo "installing $PACKAGES" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES

if ! have_rsyslogd || ! have_imrelp; then
    echo "rsyslogd or imrelp still missing after installing $PACKAGES" >&2
    exit 1
fi
