# The two commands a newcomer runs: `make demo` and `make test`. Everything installs into .venv
# from constraints.txt (pip freeze), so every machine gets the same versions.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_START ?= 2026-03-01
DEMO_END ?= 2026-03-03
# `make bench BENCH_ARGS="--up-to 10000000"` leaves the 100M day out; `--only job rerun` picks cases
BENCH_ARGS ?=

AIRFLOW_PORT ?= 8080
# Airflow for the demo and `make airflow`: its own home under var/, our DAGs, the demo data.
AIRFLOW_ENV = AIRFLOW_HOME=$(CURDIR)/var/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	BILLING_SOURCE=$(CURDIR)/var/landing BILLING_STAGING=$(CURDIR)/var/staging \
	BILLING_WAREHOUSE_URL=duckdb:///$(CURDIR)/var/warehouse.duckdb

.PHONY: install demo test bench lint clean constraints airflow

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[airflow,celery,dev]'
	$(PY) -m pip check
	touch $@

# The demo uses the embedded defaults: landing zone var/landing, warehouse var/warehouse.duckdb.
demo: install
	rm -rf var/landing var/staging var/warehouse.duckdb var/airflow
	$(VENV)/bin/billing-jobs generate --out var/landing --start $(DEMO_START) --days 3 \
		--messages-per-day 20000 --format mixed
	$(AIRFLOW_ENV) airflow db migrate > /dev/null
	for day in $$($(PY) -c "import datetime as d; s=d.date.fromisoformat('$(DEMO_START)'); \
		e=d.date.fromisoformat('$(DEMO_END)'); print(*[s+d.timedelta(k) for k in range((e-s).days+1)])"); do \
		echo "airflow dags test billing_daily $$day"; \
		$(AIRFLOW_ENV) airflow dags test billing_daily $$day > var/airflow/dags-test-$$day.log 2>&1 \
			|| { tail -40 var/airflow/dags-test-$$day.log; exit 1; }; \
		grep -o "DagRun Finished: dag_id=billing_daily, logical_date=[^,]*" var/airflow/dags-test-$$day.log; \
	done
	for day in $$($(PY) -c "import datetime as d; s=d.date.fromisoformat('$(DEMO_START)'); \
		e=d.date.fromisoformat('$(DEMO_END)'); print(*[s+d.timedelta(k) for k in range((e-s).days+1)])"); do \
		echo "airflow dags test provider_reconciliation $$day"; \
		$(AIRFLOW_ENV) airflow dags test provider_reconciliation $$day > var/airflow/provider-$$day.log 2>&1 \
			|| { tail -40 var/airflow/provider-$$day.log; exit 1; }; \
		grep -o "DagRun Finished: dag_id=provider_reconciliation, logical_date=[^,]*" var/airflow/provider-$$day.log; \
	done
	$(PY) -m billing_jobs.summary published_invoice_lines
	$(PY) -m billing_jobs.summary monthly_totals_by_customer
	$(PY) -m billing_jobs.summary provider_by_customer_month
	$(PY) -m billing_jobs.summary provider_differences_by_kind

# Airflow locally (standalone: api-server, scheduler, dag-processor, triggerer; SQLite metadata,
# LocalExecutor with a parallelism that fits 2 cores), wired to the demo data of `make demo`.
airflow: install
	mkdir -p var/airflow
	@echo "Airflow UI: http://localhost:$(AIRFLOW_PORT)  (login: admin / the password printed below"
	@echo "and kept in var/airflow/simple_auth_manager_passwords.json.generated)"
	$(AIRFLOW_ENV) AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
		AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/ \
		AIRFLOW__CORE__PARALLELISM=4 AIRFLOW__CORE__EXECUTOR=LocalExecutor \
		AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
		airflow standalone

test: install
	$(PY) -m pytest

# the performance targets as one table, failing when one is missed (bench/acceptance.py); the
# detailed tables per kind and size: python -m bench.run SIZES --what reconcile|job|rerun|...
bench: install
	$(PY) -m bench.acceptance $(BENCH_ARGS)

# Regenerate the lock after changing pyproject.toml: a fresh venv, the newest allowed versions.
constraints:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e '.[airflow,celery,dev]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
