# The one task runner: the README, CI and developers all call these targets.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements.lock | cut -d' ' -f1)

.PHONY: install run test test-fast lint format typecheck bench bench-tools bench-stream bench-encryption bench-carry bench-long bench-chaos bench-scale lock record-histories browser clean

install: $(STAMP)

$(STAMP): requirements.lock
	@command -v $(PY) >/dev/null || { echo "$(PY) not found: set PY=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install --require-hashes --no-deps -r requirements.lock
	rm -f $(VENV)/.installed-* && touch $@

## Command one: Temporal dev server + worker + gateway + local model, on embedded defaults.
run: install
	$(BIN)/python -m devstack

## Command two: everything CI checks.
test: install lint typecheck browser
	$(BIN)/python -m pytest

test-fast: install browser
	$(BIN)/python -m pytest -m "not model and not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy .

bench: install
	$(BIN)/python -m bench.turns

bench-tools: install
	$(BIN)/python -m bench.tools

bench-stream: install
	$(BIN)/python -m bench.streaming

bench-long: install
	$(BIN)/python -m bench.long

## Worker kill -9s, gateway restarts and a dev-server restart under load: nothing lost.
bench-chaos: install
	$(BIN)/python -m bench.chaos

## Throughput and turn latency with 1, 2 and 3 worker processes.
bench-scale: install
	$(BIN)/python -m bench.scale

bench-encryption: install
	$(BIN)/python -m bench.encryption

## History bytes of one run boundary carrying ~150 KB, payload store off and on.
bench-carry: install
	$(BIN)/python -m bench.carry

record-histories: install
	$(BIN)/python -m tests.record_histories

## Debian's Chromium and chromedriver, for the web page's test (tests/test_web_page.py); only
## when missing. Selenium drives them by path and never downloads a browser or driver.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y --no-install-recommends \
			chromium chromium-driver; \
	fi

## Re-lock after changing dependencies in pyproject.toml (versions and hashes, no URLs).
lock:
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-emit-find-links --no-emit-index-url \
		-o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
