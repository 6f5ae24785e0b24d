#!/usr/bin/env bash
# Builds the edge-device image: a minimal Debian 12 root filesystem with
# the zeroth .deb installed offline (dpkg inside the image, no network)
# and zeroth-agent enabled, packed as an ext4 image plus kernel and initrd
# for direct kernel boot under qemu. Prints the output directory.
#
#   images/build.sh target/debian/zeroth.deb
#
# The Debian base is built once per recipe and cached; a new .deb only
# repeats the install and the packing (seconds).
set -euo pipefail
DEB=$(realpath "${1:?usage: images/build.sh ZEROTH_DEB}")
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${ZEROTH_IMAGE_CACHE:-$HOME/.cache/zeroth/images}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" -eq 0 ] || { echo "images/build.sh must run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap (or make deps)" >&2; exit 1; }

recipe=$(cat "$HERE/base.sh" "$HERE"/rootfs/* | sha256sum | cut -c1-16)
base=$CACHE/base-$recipe.tar
out=$CACHE/edge-$recipe-$(sha256sum "$DEB" | cut -c1-16)
if [ -f "$out/root.ext4" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$CACHE/debs"
# Older recipes' bases and images are not needed any more.
find "$CACHE" -maxdepth 1 \( -name 'base-*.tar' ! -name "base-$recipe.tar" \) -delete
find "$CACHE" -maxdepth 1 -type d -name 'edge-*' ! -name "$(basename "$out")" -exec rm -rf {} +
work=$(mktemp -d "${TMPDIR:-/tmp}/zeroth-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

if [ ! -f "$base" ]; then
    # shellcheck source=images/base.sh
    . "$HERE/base.sh"
    tar -C "$root" -cf "$base.new" . && mv "$base.new" "$base"
else
    mkdir -p "$root" && tar -C "$root" -xf "$base"
fi

echo "image: installing $(basename "$DEB") offline" >&2
cp "$DEB" "$root/tmp/zeroth.deb"
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
chroot "$root" dpkg -i /tmp/zeroth.deb >&2
umount "$root/proc"
rm "$root/tmp/zeroth.deb"
ln -sf /lib/systemd/system/zeroth-agent.service "$root/etc/systemd/system/multi-user.target.wants/"

mkdir -p "$out.new"
kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
cp "$kernel" "$out.new/vmlinuz"
cp "$root/boot/initrd.img-${kernel##*/vmlinuz-}" "$out.new/initrd.img"
mkfs.ext4 -q -F -L edgeroot -d "$root" "$out.new/root.ext4" 1G
rm -rf "$out" && mv "$out.new" "$out"
echo "$out"
