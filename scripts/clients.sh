#!/usr/bin/env bash
# Installs the stock PyPI tools the tests and the demo run against zeroth,
# each in a virtual environment of Debian's Python that every user can read:
# py-spiffe (the SPIFFE Workload API client) and schemathesis (the
# property-based fuzzer that checks the HTTP API against its OpenAPI
# document). Idempotent.
set -euo pipefail

# venv_with DIR DIST VERSION: DIR holds DIST==VERSION, or is made to.
venv_with() {
  local venv=$1 dist=$2 version=$3
  if "$venv/bin/python3" -c "import importlib.metadata as m, sys; sys.exit(m.version('$dist') != '$version')" 2>/dev/null; then
    echo "clients: $dist $version present"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "clients: $dist $version missing at $venv; run 'make deps' as root" >&2
    exit 1
  fi
  echo "clients: installing $dist $version in $venv"
  (
    umask 022
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$dist==$version"
  )
}

venv_with /opt/zeroth-test/py-spiffe spiffe 0.3.2
venv_with /opt/zeroth-test/schemathesis schemathesis 4.32.5
echo "clients: done"
