# zeroth: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what is missing first (`make deps`, as root on Debian 12).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: deps rust build demo test fmt lint check clean

## Install the Debian packages and the Rust toolchain zeroth builds and tests with.
deps:
	@scripts/deps.sh
	@scripts/rust.sh

build: deps
	$(CARGO) build --workspace --all-targets

## Start a private lab and show zeroth working against it.
demo: deps
	$(CARGO) run --quiet --bin zeroth -- demo

## Formatting, lints and every test (unit and integration, on the real lab).
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) nextest run --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
