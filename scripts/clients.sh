#!/usr/bin/env bash
# Installs the stock PyPI clients the tests and the demo run against zeroth
# (py-spiffe, the SPIFFE Workload API client) in a virtual environment of
# Debian's Python that every user can read. Idempotent.
set -euo pipefail

VENV=/opt/zeroth-test/py-spiffe
PY_SPIFFE=0.3.2

if "$VENV/bin/python3" -c "import importlib.metadata as m, sys; sys.exit(m.version('spiffe') != '$PY_SPIFFE')" 2>/dev/null; then
  echo "clients: py-spiffe $PY_SPIFFE present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "clients: py-spiffe $PY_SPIFFE missing at $VENV; run 'make deps' as root" >&2
  exit 1
fi
echo "clients: installing py-spiffe $PY_SPIFFE in $VENV"
umask 022
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "spiffe==$PY_SPIFFE"
echo "clients: done"
