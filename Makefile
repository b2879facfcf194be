# The two commands a new user needs: `make demo` and `make test`. Both install first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-data score-demo test test-deps lint bench clean

# Python packages and OpenSeadragon, into this folder only: no root, no Debian package.
install: $(STAMP) node_modules/.package-lock.json

# OpenSeadragon for the viewer, from the committed lock file (served from node_modules, never committed).
# npm ci writes node_modules/.package-lock.json; it reruns when node_modules is gone or the lock is newer.
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found; install Node.js with npm (Debian: apt-get install -y nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

# Debian packages only the tests drive for real: Chromium (browser tests, through Playwright),
# nginx (the deployment recipe), SLURM and munge (a single-node cluster for the job-array path).
# `make test` installs them as root when missing; elsewhere it prints the command (those tests then
# skip locally and fail in CI). `make demo` never needs them.
SYSTEM_PACKAGES := /usr/bin/chromium:chromium /usr/sbin/nginx:nginx-light /usr/sbin/slurmctld:slurm-wlm \
	/usr/sbin/munged:munge
test-deps:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
		[ -x "$${entry%%:*}" ] || missing="$$missing $${entry#*:}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages for the tests:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	else \
		echo "note: missing Debian packages for some tests:$$missing"; \
		echo "      sudo apt-get install -y$$missing"; \
		echo "      (without them those tests are skipped locally and fail in CI)"; \
	fi

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 (or run make PY=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo-data: install
	$(BIN)/python -m demo.build

score-demo: demo-data
	$(BIN)/python create_heatmaps.py --config data/demo/demo_config.yaml
	$(BIN)/python create_heatmaps.py --config data/demo/demo_config_abmil.yaml

demo: score-demo
	@echo
	@echo "Demo outputs:"
	@echo "  blockmaps:        heatmaps/heatmap_raw_results/DEMO/ and DEMO_ABMIL/ (a second model, compared)"
	@echo "  heatmaps/results: heatmaps/heatmap_production_results/DEMO/ and DEMO_ABMIL/"
	@echo "Serving the viewer on http://127.0.0.1:5000 (Ctrl-C stops it)"
	$(BIN)/python run_viewer.py --demo --port 5000

# ruff (lint + format check) on all Python, ESLint on the pages' modules, mypy (strict) on the core.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	npm run --silent lint
	$(BIN)/mypy

test: install test-deps lint
	$(BIN)/python -m pytest -n 2 -q

bench: install demo-data
	$(BIN)/python -m bench.bench_static
	$(BIN)/python -m bench.bench_cohort
	$(BIN)/python -m bench.bench_tiles
	$(BIN)/python -m bench.bench_first_tile
	$(BIN)/python -m bench.bench_scale
	$(BIN)/python -m bench.bench_compare

clean:
	rm -rf $(VENV) data heatmaps/heatmap_raw_results heatmaps/heatmap_production_results
