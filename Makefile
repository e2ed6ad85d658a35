# The whole set-up on a fresh machine with Python >= 3.10: `make app` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: app test test-all lint format pretrained bench experiments clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/kdviz app --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check kdviz tests benchmarks scripts pretrained app.py
	$(BIN)/ruff format --check kdviz tests benchmarks scripts pretrained app.py
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check kdviz tests benchmarks scripts pretrained app.py

format: $(STAMP)
	$(BIN)/ruff format kdviz tests benchmarks scripts pretrained app.py
	$(BIN)/ruff check --fix kdviz tests benchmarks scripts pretrained app.py

pretrained: $(STAMP)
	$(BIN)/python pretrained/make_pretrained.py

bench: $(STAMP)
	$(BIN)/python benchmarks/distill_speed.py
	$(BIN)/python benchmarks/explorer_speed.py
	$(BIN)/python benchmarks/run_latency.py

experiments: $(STAMP)
	$(BIN)/python scripts/run_experiments.py --threads 1 --readme README.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
