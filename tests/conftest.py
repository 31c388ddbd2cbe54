import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests import their shared helpers as `helpers`

import os
import uuid

import pytest

# The tests bill synthetic numbers with the public demo secret, PostgreSQL included; the product
# refuses that outside tests (config.Settings.check_secret; tested in test_privacy.py).
os.environ["BILLING_ALLOW_DEMO_SECRET"] = "1"

PG_ADMIN_URL = os.environ.get("BILLING_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_admin():
    """A connection to the local PostgreSQL. Outside CI a missing server skips the PostgreSQL tests;
    in CI (CI set) it fails them: a missing service must never pass as green."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and unreachable at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin):
    """A fresh database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"create database {name}"))
    yield pg_admin.url.set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"drop database if exists {name} with (force)"))


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse_url(request, tmp_path):
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path}/warehouse.duckdb"
    return request.getfixturevalue("pg_url")
