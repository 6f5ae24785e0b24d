#!/usr/bin/env bash
# Prints the directory of a private qemu-system-x86_64 (Debian 12's), set up
# once in the image cache. Installing qemu-system-x86 system-wide would
# replace qemu-utils on some machines, so its packages are unpacked privately.
set -euo pipefail
CACHE=${ZEROTH_IMAGE_CACHE:-$HOME/.cache/zeroth/images}
Q=$CACHE/qemu
if [ -x "$Q/root/usr/bin/qemu-system-x86_64" ]; then
  echo "$Q/root"
  exit 0
fi
mkdir -p "$Q/debs" "$Q/root.new"
# Resolve and fetch qemu-system-x86 with its libraries, install nothing.
apt-get -q update >&2
apt-get install -y -q --download-only --no-install-recommends \
  -o Dir::Cache::archives="$Q/debs" -o Debug::NoLocking=1 \
  qemu-system-x86 qemu-system-data seabios ipxe-qemu >&2 || {
  # apt may refuse to resolve against what is installed; fetch by name then.
  (cd "$Q/debs" && apt-get download qemu-system-x86 qemu-system-data qemu-system-common \
     seabios ipxe-qemu libfdt1 libslirp0 libpmem1 libdaxctl1 libndctl6 liburing2 \
     libaio1 libcapstone4 libbpf1 libvdeplug2 libjack-jackd2-0 libspice-server1 \
     libusbredirparser1 libvirglrenderer1 libnuma1 libpcsclite1 libfuse3-3 \
     libiscsi7 librbd1 librados2 libgfapi0 libgfrpc0 libgfxdr0 libglusterfs0 >&2)
}
for d in "$Q"/debs/*.deb; do dpkg -x "$d" "$Q/root.new"; done
rm -rf "$Q/root" && mv "$Q/root.new" "$Q/root"
echo "$Q/root"
