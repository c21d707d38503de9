# Exemplar: `make run` sets up and starts the app; `make test` sets up and runs every test.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: run test venv system-deps demo worker clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,postgres,redis,onnx]'
	@touch $(STAMP)

venv: $(STAMP)

# Browser tests drive Debian's chromium; PostgreSQL and scale-out tests need the server binaries and redis-server.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    || ! command -v redis-server >/dev/null 2>&1; then \
	  echo "installing chromium, postgresql server binaries and redis-server with apt-get"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql redis-server >/dev/null) \
	    || { echo "ERROR: could not install chromium / postgresql / redis-server (need root and Debian's registry)"; exit 1; }; \
	fi
	@command -v chromium >/dev/null || { echo "ERROR: chromium missing after install"; exit 1; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "ERROR: postgresql server binaries missing after install"; exit 1; }
	@command -v redis-server >/dev/null || { echo "ERROR: redis-server missing after install"; exit 1; }

demo: $(STAMP)
	$(BIN)/exemplar db upgrade
	$(BIN)/exemplar demo

run: demo
	$(BIN)/exemplar serve

worker: $(STAMP)
	$(BIN)/exemplar worker

test: $(STAMP) system-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

clean:
	rm -rf var .pytest_cache
