# Everything runs from a project-local .venv; system packages come from apt (Debian 12).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := redis-server wrk postgresql postgresql-contrib chromium nodejs

.PHONY: install system-packages run test test-unit test-integration test-browser test-fault test-cluster test-abuse lint format services-up services-down bench bench-ab clean

install: system-packages $(VENV)/.installed

# Installs only what is missing; needs root (CI runs as root), otherwise says what to install.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -eq 0 ]; then \
			echo "installing system packages (missing:$$missing)"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update && apt-get install -y $(APT_PACKAGES); \
		else \
			echo "missing:$$missing -- run: sudo apt-get install -y $(APT_PACKAGES)" >&2; \
			exit 1; \
		fi; \
	fi

# Redone only when pyproject.toml changes. Debian's system python needs python3-venv for ensurepip.
$(VENV)/.installed: pyproject.toml devtools/pyproject.toml
	@if ! $(PYTHON) -m venv $(VENV); then \
		rm -rf $(VENV); \
		if [ "$$(id -u)" -ne 0 ]; then echo "run: sudo apt-get install -y python3-venv" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y python3-venv || { apt-get update && apt-get install -y python3-venv; }; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/pip install --disable-pip-version-check -e '.[dev]' -e ./devtools
	touch $@

run: install
	$(BIN)/courseflow run

# Every tier, with the coverage of courseflow and projections (subprocesses included) printed and gated.
test: install
	$(BIN)/pytest --cov --cov-report=term

# No server at all: seconds, for every edit.
test-unit: install
	$(BIN)/pytest tests/unit -q

test-integration: install
	$(BIN)/pytest -m integration -q

test-browser: install
	$(BIN)/pytest tests/browser -q

test-fault: install
	$(BIN)/pytest tests/fault -q

test-cluster: install
	$(BIN)/pytest tests/cluster -q

test-abuse: install
	$(BIN)/pytest tests/abuse -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

services-up: install
	$(BIN)/courseflow services up

services-down: install
	$(BIN)/courseflow services down

bench: install
	$(BIN)/python -m tests.bench

# The intake and decision rows of commit BASE and of the working tree, run alternately on the same servers.
ROUNDS ?= 2
bench-ab: install
	@test -n "$(BASE)" || { echo "usage: make bench-ab BASE=<commit> [ROUNDS=2]"; exit 2; }
	$(BIN)/python -m tests.bench --ab $(BASE) --rounds $(ROUNDS)

# Also removes the /var/tmp fallback cluster that `services up` may have used (see devtools/courseflow_local/postgres.py).
clean:
	-@if [ -x $(BIN)/courseflow ]; then $(BIN)/courseflow services down; fi
	-@target=$$(readlink .courseflow/postgres 2>/dev/null); \
	case "$$target" in /var/tmp/courseflow-*/postgres) rm -rf "$${target%/postgres}";; esac
	rm -rf $(VENV) .courseflow .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
