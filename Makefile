# The two commands a new user needs: `make demo` and `make test`. Both install first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-data score-demo test bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 (or run make PY=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo-data: install
	$(BIN)/python -m demo.build

score-demo: demo-data
	$(BIN)/python create_heatmaps.py --config data/demo/demo_config.yaml

demo: score-demo
	@echo
	@echo "Demo outputs:"
	@echo "  blockmaps:        heatmaps/heatmap_raw_results/DEMO/"
	@echo "  heatmaps/results: heatmaps/heatmap_production_results/DEMO/"

test: install
	$(BIN)/python -m pytest -n 2 -q

bench: install
	$(BIN)/python bench/bench_static.py

clean:
	rm -rf $(VENV) data heatmaps/heatmap_raw_results heatmaps/heatmap_production_results
