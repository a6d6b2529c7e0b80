# Print Gateway: build the virtual environment on demand, then run or test.
# Every target that needs Python depends on $(STAMP), so a fresh clone needs
# nothing but a Python 3.11+ with the venv module (Debian: python3-venv).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-tools test-slow test-faults test-syslog test-php test-browser test-fleet test-fuzz php-vendor lint bench bench-print bench-peers bench-oneshot bench-micro bench-query bench-soak bench-web clean distclean wheel wheel-native image image-check

# The native ingest core (gateway/native/) is compiled by this install when a C
# compiler and the Python headers are present (setup.py); a change to its
# sources installs again, which rebuilds it.
NATIVE_SOURCES := setup.py $(wildcard gateway/native/*.c gateway/native/*.h gateway/native/blake3/*)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	@$(PYTHON) -m venv $(VENV) || { echo "python venv failed: on Debian install python3-venv"; exit 1; }
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

## make run: the gateway in the foreground with embedded defaults (state in ./var).
run: $(STAMP)
	$(BIN)/gateway run

# strace records the real syscalls for the crash-state tests (tests/crashsim.py);
# installed here when root can, otherwise those tests fail (they never skip).
test-tools:
	@command -v strace >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace >/dev/null; } || \
	  echo "strace is missing and cannot be installed here: the crash-state tests will fail"
	@command -v curl >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null; } || \
	  echo "curl is missing and cannot be installed here: the HTTP ingest test with curl will fail"

## make test: the default suite (well under 15 minutes on 2 cores).
test: $(STAMP) test-tools
	$(BIN)/python -m pytest -q -m "not slow and not faults and not syslog and not php and not browser and not fleet"

## make test-php: the PHP client library (PHPUnit) and the WordPress plugin in a real WordPress on MariaDB, against the real gateway; installs the Debian packages it needs when run as root, fails without them (~1 min).
test-php: $(STAMP)
	sh clients/install-php-deps.sh
	phpunit -c clients/php/phpunit.xml
	$(BIN)/python -m pytest -q -m php tests/test_wordpress.py tests/test_wordpress_dedup.py

## make test-browser: the web console in Debian's chromium through chromedriver and Selenium (the browser extra); installs chromium and chromium-driver when root, fails without them; screenshots into docs/web/ (~1 min).
test-browser: $(STAMP)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	  else \
	    echo "test-browser: chromium is missing; as root: apt-get install -y --no-install-recommends chromium chromium-driver" >&2; \
	  fi; \
	fi
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,browser]'
	$(BIN)/python -m pytest -q -m browser tests/test_web_browser.py

## make php-vendor: refresh the WordPress plugin's copy of the PHP client library (tests/test_php_vendored.py checks it).
php-vendor:
	rm -rf clients/wordpress/print-gateway/lib/print-gateway-client
	mkdir -p clients/wordpress/print-gateway/lib/print-gateway-client
	cp -r clients/php/autoload.php clients/php/src clients/wordpress/print-gateway/lib/print-gateway-client/

## make test-slow: long soak and crash-loop tests kept out of the default suite.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

## make test-faults: the long fault, crash and abuse suite (100 kill -9 rounds, floods, ~4,700 power-cut crash states, 3 minutes of the reference-model stress test); about 10 minutes (9 min 25 s measured on a shared 2-CPU machine).
test-faults: $(STAMP) test-tools
	GATEWAY_FAULTS=full $(BIN)/python -m pytest -q -s tests/test_faults.py tests/test_crash_states.py tests/test_stress_model.py

## make test-syslog: a real rsyslogd (Debian package rsyslog, installed first when root) forwarding to the gateway; fails without it.
test-syslog: $(STAMP)
	@if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsyslog; \
	  else \
	    echo "test-syslog: rsyslogd is missing; as root: apt-get install -y --no-install-recommends rsyslog" >&2; \
	  fi; \
	fi
	$(BIN)/python -m pytest -q -m syslog tests/test_syslog_rsyslog.py

## make test-fleet: signed checkpoints, replication and the HQ verifier against a real Ceph RGW with Object Lock started on loopback (tests/cephrgw.py); installs ceph-mon, ceph-osd, radosgw and ceph-common when root, fails without them.
test-fleet: $(STAMP)
	@if ! command -v radosgw >/dev/null 2>&1 || ! command -v ceph-mon >/dev/null 2>&1 || ! command -v ceph-osd >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ceph-mon ceph-osd radosgw ceph-common; \
	  else \
	    echo "test-fleet: Ceph is missing; as root: apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common" >&2; \
	  fi; \
	fi
	$(BIN)/python -m pytest -q -m fleet tests/test_fleet_store.py tests/test_fleet_replication.py tests/test_fleet_restore.py

# Seconds of fuzzing (libFuzzer -max_total_time); docs/native.md.
FUZZ_SECONDS ?= 120
## make test-fuzz: libFuzzer with ASan and UBSan on the native core's gw_scan (tests/fuzz/) for FUZZ_SECONDS (default 120) over tests/fuzz/corpus/; installs clang and libclang-rt-N-dev when root, fails without them; new inputs go to build/fuzz/new-corpus/, crashes to build/fuzz/artifacts/ (docs/native.md).
test-fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh

lint: $(STAMP)
	$(BIN)/ruff check gateway board tests bench tools
	$(BIN)/ruff format --check gateway board tests bench tools

## make bench: the load generator against the real gateway over loopback, plus the ledger-size curves; appends to bench/RESULTS.md (~5 min).
bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.curves

## make bench-print: printing benchmarks (first byte, queued drain, ingest while printing); appends to bench/RESULTS.md.
bench-print: $(STAMP)
	$(BIN)/python -m bench.printing

## make bench-soak: 1,000 connections for 10 minutes, resident memory sampled (must stay flat); appends to bench/RESULTS.md.
bench-soak: $(STAMP)
	$(BIN)/python -m bench.soak

## make bench-peers: the gateway beside a naive listener and rsyslog (imtcp+omfile sync, imrelp), same client; appends to bench/RESULTS.md.
bench-peers: $(STAMP)
	sh bench/peers-deps.sh || echo "bench-peers: rsyslog is missing; it is reported as not measured"
	$(BIN)/python -m bench.peers

## make bench-oneshot: one-shot connections (connect, hello, one event, its ack, close) from 16 clients, the gateway beside rsyslog imtcp; appends to bench/RESULTS.md (~1 min).
bench-oneshot: $(STAMP)
	sh bench/peers-deps.sh || echo "bench-oneshot: rsyslog is missing; it is reported as not measured"
	$(BIN)/python -m bench.oneshot

## make bench-micro: pytest-benchmark micro-benchmarks of the hot functions (parser, CBOR, chain, frames, verify, renderers).
bench-micro: $(STAMP)
	$(BIN)/python -m pytest -q bench/micro --benchmark-only --benchmark-columns=min,median,mean,ops,rounds

## make bench-query: the audit index at 1,000,000 entries (filtered query time, index writes per entry); appends to bench/RESULTS.md.
bench-query: $(STAMP)
	$(BIN)/python -m bench.query

## make bench-web: acknowledged ingest with five web dashboards polling against none, same gateway, alternating rounds; appends to bench/RESULTS.md (~2 min).
bench-web: $(STAMP)
	$(BIN)/python -m bench.web

# The pure-Python wheel (any architecture): GATEWAY_WHEEL=pure image/wheelhouse.sh
# puts it in a wheelhouse instead of the native one (image/README.md).
wheel: $(STAMP)
	GATEWAY_NATIVE=0 $(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

## make wheel-native ARCH=aarch64: the wheel with the native core, built in a Debian bookworm arm64 root under qemu-user-static (as root; root cached in /var/cache/print-gateway); ARCH=x86_64: on this host. Into dist/; image/README.md.
ARCH ?= $(shell uname -m)
wheel-native:
	image/native-wheel.sh $(ARCH)

## make image: the Raspberry Pi SD card image with pi-gen (Docker, or PIGEN_MODE=native as root); image/README.md.
image: $(STAMP)
	image/build-image.sh

## make image-check: install into a debootstrap root and smoke-test it, as root; not part of make test.
image-check: $(STAMP)
	image/image-check.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) var
