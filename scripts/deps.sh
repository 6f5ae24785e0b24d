#!/usr/bin/env bash
# Installs the Debian 12 system packages zeroth's build, lab and tests need.
# Idempotent: when every package is already installed it does nothing.
set -euo pipefail

PACKAGES=(
  swtpm swtpm-tools gnutls-bin tpm2-tools libtss2-dev
  softhsm2 opensc
  openssh-server openssh-client
  postgresql postgresql-client mariadb-server mariadb-client
  pkg-config build-essential curl ca-certificates systemd debootstrap openssl
  python3 python3-psycopg2 python3-pymysql python3-venv sysbench
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all system packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}; run 'make deps' as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps: installing ${missing[*]}"
apt-get update -q
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  # Some images ship a libcurl4 newer than the mirror's; libtss2-dev needs
  # libcurl4-openssl-dev of the very same version, so pin both to the mirror.
  echo "deps: plain install failed; pinning libcurl to the mirror's version for libtss2-dev"
  v=$(apt-cache madison libcurl4-openssl-dev | awk 'NR==1{print $3}')
  apt-get install -y -q --no-install-recommends --allow-downgrades \
    libcurl4-openssl-dev="$v" libcurl4="$v"
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "deps: done"
