#!/bin/bash
# Installed as postrun.sh in the pi-gen checkout by image/build-image.sh.
# pi-gen's build.sh (at the pinned revision) runs an executable postrun.sh
# from its base directory once every image has been exported, inside the
# build container for build-docker.sh, with its settings in the environment
# (BASE_DIR, DEPLOY_DIR, IMG_FILENAME, COMPRESSION_LEVEL; GATEWAY_DATA_MIB
# from the config).
#
# The config asks for an uncompressed image (DEPLOY_COMPRESSION=none) so that
# the data partition can be added here; then the image is compressed.
set -euo pipefail

shopt -s nullglob
images=("${DEPLOY_DIR}/${IMG_FILENAME}"*.img)
shopt -u nullglob
if [ ${#images[@]} -ne 1 ]; then
    echo "postrun: expected one image ${DEPLOY_DIR}/${IMG_FILENAME}*.img, found ${#images[@]}" >&2
    exit 1
fi
image=${images[0]}

# 256 MiB unless the config says otherwise (see add-data-partition.sh).
"${BASE_DIR}/stage-gateway/00-gateway/files/payload/image/add-data-partition.sh" \
    "$image" "${GATEWAY_DATA_MIB:-256}"

# pi-gen's block map describes the two-partition image: make it again.
rm -f "${image%.img}.bmap"
if command -v bmaptool >/dev/null; then
    bmaptool create -o "${image%.img}.bmap" "$image"
fi

# As pi-gen's own xz export: all cores, at most half the memory, its
# compression level (6 unless the config sets COMPRESSION_LEVEL).
xz --compress --force --threads 0 --memlimit-compress=50% -"${COMPRESSION_LEVEL:-6}" "$image"
(cd "$(dirname "$image")" && sha256sum "$(basename "$image").xz" >"$(basename "$image").xz.sha256")
echo "postrun: ${image}.xz"
