import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests import their shared helpers as `helpers`

import os
import uuid

import pytest
from hypothesis import settings

# Property tests check results, not speed: on a busy 2-core machine an example that pays a lazy
# import (pyarrow loads pandas on its first conversion of a Python value) took 284 ms and failed
# Hypothesis' default 200 ms deadline. Speed lives in `make bench`.
settings.register_profile("billing", deadline=None)
settings.load_profile("billing")

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's standalone S3-compatible server (a dev dependency, so never missing), in its own
    process on a free port: the object store a staging area or a landing zone may live in. Ready
    when it answers over HTTP."""
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                                 "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        try:
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        pytest.fail(f"moto_server exited with {proc.returncode}; log in {log}")
                    if time.monotonic() > deadline:
                        pytest.fail(f"moto_server did not answer in 120 s; log in {log}")
                    time.sleep(0.2)
            yield endpoint
        finally:
            proc.terminate()
            proc.wait(timeout=30)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the local S3 server, as `s3://<bucket>`; this process (and children
    that inherit its environment) reaches the server through AWS_ENDPOINT_URL, as a deployment
    would reach its own."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = f"billing-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}"
