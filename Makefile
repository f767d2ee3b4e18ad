# make run: set up and start relay on config.example.yaml (embedded SQLite store, no outside service)
# make test: set up, then ruff, mypy --strict and the whole pytest suite (slow tests included)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-installed-stamp

.PHONY: run test lint bench bench-backlog bench-instructions bench-postgres bench-warehouse schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

run: $(STAMP)
	$(BIN)/relay run -c config.example.yaml

lint: $(STAMP)
	$(BIN)/ruff check relay tests bench
	$(BIN)/ruff format --check relay tests bench
	$(BIN)/mypy relay tests

test: lint
	$(BIN)/pytest -q

bench: $(BENCH_STAMP)  # the bench extra: the naive relay it compares with
	$(BIN)/python bench/ingest.py

bench-backlog: $(STAMP)  # relay beside 1,000,000 pending deliveries (about 5 minutes)
	$(BIN)/python bench/backlog.py

bench-instructions: $(STAMP)  # needs valgrind (callgrind); about 7 minutes
	$(BIN)/python bench/instructions.py

bench-postgres: $(STAMP)  # needs PostgreSQL on 127.0.0.1 ($$RELAY_TEST_POSTGRES_URL)
	$(BIN)/python bench/replicas.py

bench-warehouse: $(STAMP)  # needs PostgreSQL on 127.0.0.1 ($$RELAY_TEST_POSTGRES_URL)
	$(BIN)/python bench/warehouse.py

schema: $(STAMP)  # regenerate relay.schema.json after changing a config model
	$(BIN)/relay schema > relay.schema.json

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
