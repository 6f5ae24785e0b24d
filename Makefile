# zeroth: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what is missing first (`make deps`, as root on Debian 12).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: deps rust build demo test fuzz fuzz-api bench fmt clean deb image image-test

## Install the Debian packages and the Rust toolchain zeroth builds and tests with.
deps:
	@scripts/deps.sh
	@scripts/rust.sh
	@scripts/clients.sh

build: deps
	$(CARGO) build --workspace --all-targets

## Start a private lab and show zeroth working against it.
demo: deps
	$(CARGO) run --quiet --bin zeroth -- demo

## Formatting, lints and every test (unit and integration, on the real lab),
## then the edge-device VM test on the freshly built .deb and image.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) nextest run --workspace --no-fail-fast
	$(MAKE) image-test

## Fuzz every parser of untrusted bytes for FUZZ_SECONDS each (libFuzzer).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := tpm2b_public tpms_attest tpmt_signature quote ek_certificate event_log ssh_public_key workload_request postgres_startup mysql_handshake_response http2_authority workload_csr
fuzz: deps
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	@set -eo pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t fuzz/logs; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir fuzz $$t fuzz/corpus/$$t fuzz/seeds/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 > fuzz/logs/$$t.log 2>&1 \
	    || { tail -40 fuzz/logs/$$t.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec' fuzz/logs/$$t.log; \
	done

## Fuzz the HTTP API against its OpenAPI document (schemathesis, from PyPI) on a live
## lab server, over mTLS as a token host: FUZZ_API_EXAMPLES cases per operation.
FUZZ_API_EXAMPLES ?= 1000
fuzz-api: deps
	ZEROTH_FUZZ_API_EXAMPLES=$(FUZZ_API_EXAMPLES) $(CARGO) nextest run --test api --no-capture -E 'test(fuzzer)'

## Throughput against the hardware's own limits (HSM signing, quote checks).
bench: deps
	$(CARGO) run --release --quiet --bin zeroth -- bench hsm
	$(CARGO) run --release --quiet --bin zeroth -- bench quote

## The offline-installable package: target/debian/zeroth_<version>_amd64.deb.
deb: deps
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-deb
	$(CARGO) build --release --bin zeroth --no-default-features
	rm -rf target/man && target/release/zeroth manpages target/man && gzip -9n target/man/*.1
	target/release/zeroth openapi > target/openapi.json
	$(CARGO) deb --no-build --output target/debian/zeroth.deb
	@dpkg-deb --info target/debian/zeroth.deb | sed -n '/Package:/,/Description:/p'

## The edge-device image (Debian 12 + the .deb, agent enabled) and a private qemu.
image: deb
	@images/qemu.sh >/dev/null
	images/build.sh target/debian/zeroth.deb

## Boot the image under qemu with a vTPM: enrol, reboot and re-attest, PCR drift refused;
## and as a server appliance: the README's install section run under systemd.
image-test: image
	ZEROTH_EDGE_IMAGE=$$(images/build.sh target/debian/zeroth.deb) ZEROTH_QEMU=$$(images/qemu.sh) ZEROTH_DEB=$(CURDIR)/target/debian/zeroth.deb \
	  $(CARGO) nextest run --features image-test --test image --no-capture

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
