#!/bin/bash
# pi-gen sub-stage: install the Print Gateway into the image's root file
# system. pi-gen runs this on the build host (or in its build container) with
# ROOTFS_DIR set; install-gateway.sh chroots into the root where it must (on
# a PC through qemu-user-static and binfmt_misc).
# files/ is filled by image/build-image.sh: payload/ holds image/, etc/,
# README.md and docs/ from the repository, wheelhouse/ the aarch64 wheels.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/files/payload/image/install-gateway.sh" "${ROOTFS_DIR}" "$here/files/wheelhouse"
