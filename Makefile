# The two commands a newcomer runs: `make demo` and `make test`. Everything installs into .venv
# from constraints.txt (pip freeze), so every machine gets the same versions.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_START ?= 2026-03-01
DEMO_END ?= 2026-03-03
BENCH_SIZES ?= 1000000 10000000

.PHONY: install demo test bench lint clean constraints

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[airflow,dev]'
	$(PY) -m pip check
	touch $@

# The demo uses the embedded defaults: landing zone var/landing, warehouse var/warehouse.duckdb.
demo: install
	rm -rf var/landing var/staging var/warehouse.duckdb
	$(VENV)/bin/billing-jobs generate --out var/landing --start $(DEMO_START) --days 3 \
		--messages-per-day 20000 --format mixed
	$(VENV)/bin/billing-jobs run --date $(DEMO_START) --to $(DEMO_END)
	$(PY) -m billing_jobs.summary published_invoice_lines
	$(PY) -m billing_jobs.summary monthly_totals_by_customer

test: install
	$(PY) -m pytest

bench: install
	$(PY) -m bench.run $(BENCH_SIZES)

# Regenerate the lock after changing pyproject.toml: a fresh venv, the newest allowed versions.
constraints:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e '.[airflow,dev]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
