#!/usr/bin/env bash
# Makes sure a stable Rust toolchain with rustfmt, clippy and cargo-nextest is
# present. On a fresh machine it installs rustup's stable toolchain for the
# current user (into ~/.cargo), which needs curl.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v cargo >/dev/null 2>&1; then
  echo "rust: installing the stable toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain stable -c rustfmt,clippy
fi
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "rust: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
