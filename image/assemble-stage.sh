#!/usr/bin/env bash
# Assemble the pi-gen stage that installs the gateway.
#
#   image/assemble-stage.sh STAGE_DIR WHEELHOUSE
#
# STAGE_DIR (replaced) becomes image/stage-gateway plus, under
# 00-gateway/files/, payload/ (image/, etc/, docs/ and README.md from this
# repository: what install-gateway.sh installs from) and wheelhouse/ (a copy
# of WHEELHOUSE). build-image.sh puts it into the pi-gen checkout;
# make image-check runs its 00-run.sh the way pi-gen does.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 STAGE_DIR WHEELHOUSE" >&2
    exit 2
fi
stage=$1
wheelhouse=$2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -f "$wheelhouse/requirements.txt" ] || { echo "assemble-stage: $wheelhouse is not a wheelhouse" >&2; exit 1; }

rm -rf "$stage"
cp -a "$root/image/stage-gateway" "$stage"
files="$stage/00-gateway/files"
mkdir -p "$files/payload"
cp -a "$root/image" "$root/etc" "$root/docs" "$root/README.md" "$files/payload/"
# The stage template inside the payload's image/ copy is not needed twice.
rm -rf "$files/payload/image/stage-gateway"
cp -a "$wheelhouse" "$files/wheelhouse"
