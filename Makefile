# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install bench bench-floor bench-match bench-hubspot bench-mailchimp bench-shopify bench-sftp bench-intake bench-quality clean

$(BIN)/synchub: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/synchub

install: $(BIN)/synchub

# Sync the bundled demo data into var/demo.db and write var/export/kunden_bereinigt.csv.
demo: install
	@# The demo data holds three broken rows on purpose: the sync is partial (exit code 6).
	$(BIN)/synchub --config config/demo.yaml sync || test $$? -eq 6

# The whole test suite, SQLite and PostgreSQL (127.0.0.1:5432, database test).
test: install
	$(BIN)/ruff check synchub plugins tests bench
	$(BIN)/pytest -q

# Sync throughput and memory, SQLite and PostgreSQL (figures in bench/README.md).
bench: install
	$(BIN)/python bench/sync_bench.py --records 10000 100000

# The floor under sync throughput: read, map/normalise and matching features per record, no store.
bench-floor: install
	$(BIN)/python bench/floor_bench.py --records 20000

# Matching quality and speed: FEBRL precision/recall/F1, and dedupe of a 100k-record store.
bench-match: install
	$(BIN)/python bench/febrl_bench.py --data bench/data/febrl
	$(BIN)/python bench/dedupe_bench.py --records 100000

# HubSpot API calls per N contacts read and written, against the minimum (fake HubSpot, SQLite).
bench-hubspot: install
	$(BIN)/python bench/hubspot_bench.py --records 1000 10000 --cap 25000

bench-mailchimp: install
	$(BIN)/python bench/mailchimp_bench.py --records 1000 10000

# Shopify: records/s mapping a bulk-operation JSONL of 100k customers and 300k orders into the hub.
bench-shopify: install
	$(BIN)/python bench/shopify_bench.py --customers 100000 --orders 300000

# SFTP: download+hash and read+parse MB/s and memory for 100 MB and 500 MB CSV files (loopback server).
bench-sftp: install
	$(BIN)/python bench/sftp_bench.py --mb 100 500

# Dirty 100k-row DACH and US exports through the CLI: rejected rows, quarantined values and reasons, exit code.
bench-quality: install
	$(BIN)/python bench/quality_bench.py --records 100000 --no-postgres

bench-intake: install
	$(BIN)/python bench/intake_bench.py --records 100000

clean:
	rm -rf var bench/out .pytest_cache
