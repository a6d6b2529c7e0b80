#!/bin/bash
# pi-gen stage prerun: start from the previous stage's root file system
# (stage2, Raspberry Pi OS Lite), as pi-gen's own stages do.
set -euo pipefail
if [ ! -d "${ROOTFS_DIR}" ]; then
    copy_previous
fi
