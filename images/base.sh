#!/usr/bin/env bash
# The Debian 12 base of the edge image (which also serves as a server
# appliance: SoftHSM is there), sourced by build.sh with $root,
# $CACHE, $MIRROR and $HERE set. Its hash (with rootfs/) keys the cache.
PACKAGES=systemd-sysv,udev,kmod,linux-image-amd64,tpm2-tools,tpm-udev,softhsm2,libtss2-esys-3.0.2-0,libtss2-tctildr0,libtss2-tcti-device0,libtss2-mu0,openssh-server,ca-certificates,iproute2
echo "image: debootstrap bookworm (once per recipe)" >&2
debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$PACKAGES" \
    bookworm "$root" "$MIRROR" >&2
echo zeroth-edge >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 zeroth-edge\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 defaults 0 1' >"$root/etc/fstab"
printf '9p\n9pnet_virtio\n' >"$root/etc/modules-load.d/9p.conf"
install -m 0644 "$HERE/rootfs/10-wired.network" "$root/etc/systemd/network/"
install -m 0755 "$HERE/rootfs/zeroth-provision" "$root/usr/local/sbin/"
install -m 0644 "$HERE/rootfs/zeroth-provision.service" "$HERE/rootfs/zeroth-medium-hook.service" \
    "$root/etc/systemd/system/"
wants=$root/etc/systemd/system/multi-user.target.wants
mkdir -p "$wants" "$root/etc/systemd/system/network-online.target.wants"
ln -sf /lib/systemd/system/systemd-networkd.service "$wants/"
ln -sf /lib/systemd/system/systemd-networkd-wait-online.service \
    "$root/etc/systemd/system/network-online.target.wants/"
ln -sf /etc/systemd/system/zeroth-provision.service "$wants/"
ln -sf /etc/systemd/system/zeroth-medium-hook.service "$wants/"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
