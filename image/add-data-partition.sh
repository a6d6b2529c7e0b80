#!/usr/bin/env bash
# Append the data partition to an exported SD card image.
#
#   image/add-data-partition.sh IMAGE [SIZE_MIB]
#
# pi-gen's export-image stage makes two partitions (boot, root) sized to their
# contents; a stage only sees the root file system directory and cannot add a
# partition. This runs after the export (pi-gen's postrun.sh, written by
# build-image.sh) and on a synthetic image in make image-check:
#
#   partition 3, right after the root partition: ext4, label gwdata
#   (mounted at /var/lib/gateway by the fstab line that install-gateway.sh
#   writes). It is kept small in the image; gateway-firstboot grows it to the
#   end of the card on the first boot.
#
# Works on the image file alone: parted edits the partition table and mke2fs
# writes the file system at the partition's offset, so no loop device is
# needed.
set -euo pipefail

die() { echo "add-data-partition: $*" >&2; exit 1; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 IMAGE [SIZE_MIB]" >&2
    exit 2
fi
image=$1
# 256 MiB: room for a few segments (64 MiB each) even if the first boot never
# grew the partition, while adding little to the image (it is mostly zeros
# and compresses away).
size_mib=${2:-256}
[ -f "$image" ] || die "$image: no such file"
[[ "$size_mib" =~ ^[0-9]+$ ]] && [ "$size_mib" -ge 64 ] || die "SIZE_MIB must be a number >= 64"

mib=$((1024 * 1024))
# pi-gen aligns its partitions to 8 MiB (export-image/prerun.sh, ALIGN); the
# data partition follows the same grid.
align=$((8 * mib))

table="$(parted -m -s "$image" unit B print)"
# Lines after the two header lines: NUM:START:END:SIZE:FS:NAME:FLAGS;
parts="$(tail -n +3 <<<"$table")"
count="$(grep -c . <<<"$parts" || true)"
if [ "$count" -ne 2 ]; then
    die "$image has $count partitions; expected pi-gen's two (boot, root)"
fi
[ "$(head -n 1 <<<"$table")" = BYT\; ] || die "unexpected parted output"
grep -q ':msdos:' <<<"$(sed -n 2p <<<"$table")" || die "$image: expected an MBR (msdos) partition table"

root_end="$(sed -n 2p <<<"$parts" | cut -d: -f3)"
root_end=${root_end%B}
start=$(((root_end + 1 + align - 1) / align * align))
size=$(((size_mib * mib + align - 1) / align * align))
end=$((start + size - 1))

truncate -s $((start + size)) "$image"
parted -s "$image" unit B mkpart primary ext4 "$start" "$end"

# The file system, written at the partition's offset:
#  -b 4096     4 KiB blocks; mke2fs would pick 1 KiB for a file system this
#              small, a poor fit once it has grown to the whole card.
#  -i 65536    one inode per 64 KiB: the ledger is a few large segment files
#              (64 MiB each); this still allows 4096 files per 256 MiB.
#  -m 1        1% reserved for root (default 5%: gigabytes on a large card
#              that the gateway, not root, could never use).
#  resize=     room in the group descriptor table for growing online to
#              2 TiB (536870912 blocks of 4 KiB), the most an MBR partition
#              can address.
#  nodiscard   the image file is sparse already; nothing to discard.
mke2fs -q -F -t ext4 -L gwdata -b 4096 -i 65536 -m 1 \
    -E "offset=$start,resize=536870912,nodiscard" \
    "$image" "$((size / 1024))k"

# Read back what was made.
label="$(blkid -p -O "$start" -s LABEL -o value "$image" || true)"
[ "$label" = gwdata ] || die "no gwdata file system found at offset $start"
echo "add-data-partition: $image: partition 3 at $((start / mib)) MiB, $((size / mib)) MiB, ext4 'gwdata'"
