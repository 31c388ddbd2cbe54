"""What finance reads, on DuckDB and PostgreSQL: the schema is versioned (a release 0.1 warehouse is
upgraded with its data), every column says what it means, finance's SQL runs where finance works,
views agree with each other, readers cannot block or break a run, and a close never interleaves
with a publish of its month."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from billing_jobs import invoicing, migrate, sequence, warehouse
from billing_jobs.config import Settings
from billing_jobs.errors import WarehouseError
from billing_jobs.generate import generate
from helpers import warehouse_rows as rows

ROOT = Path(__file__).resolve().parent.parent
DAYS = [dt.date(2026, 2, 1) + dt.timedelta(days=k) for k in range(3)]
FEB = [dt.date(2026, 2, 1) + dt.timedelta(days=k) for k in range(28)]
RELEASE_0_1_TABLES = ("adjustment_starts", "adjustments", "billing_runs", "closed_months",
                      "conversation_starts", "customers", "identity_conflicts",
                      "invoice_item_starts", "invoice_items", "invoice_lines", "invoices", "lines",
                      "quarantined_messages", "rate_card", "session_anomalies")


@pytest.fixture(scope="module")
def zone(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    generate(root, FEB[0], days=28, messages_per_day=120, seed=11)
    return root


def settings_for(zone: Path, tmp_path: Path, url: str, **extra) -> Settings:
    return Settings.resolve(source=str(zone), warehouse_url=url,
                            staging=str(tmp_path / "staging"), **extra)


def snapshot(url: str, columns: dict[str, list[str]]) -> dict[str, list[tuple]]:
    return {table: sorted(tuple(map(str, r.values())) for r in rows(
        url, f"select {', '.join(cols)} from billing.{table}")) for table, cols in columns.items()}


def columns_of(url: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for r in rows(url, "select table_name, column_name from information_schema.columns"
                       " where table_schema = 'billing' order by table_name, ordinal_position"):
        found.setdefault(r["table_name"], []).append(r["column_name"])
    return found


def make_release_0_1(url: str) -> None:
    """Turn a current warehouse into what release 0.1 left: its tables and view, no version."""
    from alembic import command
    from alembic.config import Config

    engine = warehouse.create_engine(url)
    with engine.connect() as conn, conn.begin():
        migrate._drop_views(conn, "billing")
        config = Config()
        config.set_main_option("script_location", str(migrate.MIGRATIONS))
        config.attributes.update(connection=conn, schema="billing")
        command.downgrade(config, "0001")
        conn.execute(sa.text("drop table billing.alembic_version"))
        conn.execute(sa.text((ROOT / "sql" / "views" / "monthly_invoice_lines.sql").read_text()))
    engine.dispose()


def test_upgrade_keeps_a_release_0_1_warehouse_and_its_data(zone, tmp_path, warehouse_url):
    settings = settings_for(zone, tmp_path, warehouse_url)
    for day in DAYS:
        sequence.run_day(settings, day)
    make_release_0_1(warehouse_url)
    old_columns = columns_of(warehouse_url)
    assert set(RELEASE_0_1_TABLES) <= set(old_columns) and "job_locks" not in old_columns
    assert "partition_date" not in old_columns["quarantined_messages"]
    before = snapshot(warehouse_url, {t: old_columns[t] for t in RELEASE_0_1_TABLES})
    assert before["conversation_starts"] and before["quarantined_messages"]

    done = subprocess.run([sys.executable, "-m", "billing_jobs.cli", "warehouse", "upgrade",
                           "--warehouse", warehouse_url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"warehouse schema billing upgraded from revision 0.1 to " \
                                  f"{migrate.HEAD}"
    assert snapshot(warehouse_url, {t: old_columns[t] for t in RELEASE_0_1_TABLES}) == before
    quarantined = rows(warehouse_url, "select * from billing.quarantined_messages")
    assert all(str(q["partition_date"]) in q["source_file"] for q in quarantined)
    assert rows(warehouse_url, "select version_num from billing.alembic_version") == [
        {"version_num": migrate.HEAD}]

    # upgraded, it runs like any other: a day again, then its rows are there once
    sequence.run_day(settings, DAYS[-1])
    again = rows(warehouse_url, "select count(*) as n from billing.quarantined_rows")[0]["n"]
    distinct = {(q["source_file"], q["source_row"]) for q in rows(
        warehouse_url, "select * from billing.quarantined_messages")}
    assert again == len(distinct) > 0


def test_migration_head_and_views_are_the_code_s():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    assert script.get_current_head() == migrate.HEAD
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(
        migrate.REVISIONS)
    assert set(migrate.VIEWS) == {p.stem for p in (ROOT / "sql" / "views").glob("*.sql")}


def test_every_column_of_every_table_and_view_says_what_it_means(warehouse_url):
    engine = warehouse.create_engine(warehouse_url)
    with engine.connect() as conn:
        migrate.upgrade(conn, "billing", 30)
        if conn.dialect.name == "postgresql":
            sql = ("select c.table_name, c.column_name, col_description("
                   "(c.table_schema || '.' || c.table_name)::regclass, c.ordinal_position)"
                   " as comment from information_schema.columns c where c.table_schema = 'billing'")
        else:
            sql = ("select table_name, column_name, comment from duckdb_columns()"
                   " where schema_name = 'billing'")
        found = conn.execute(sa.text(sql)).all()
    engine.dispose()
    tables = {r[0] for r in found}
    assert {"invoices", "invoice_items", "adjustments", *migrate.VIEWS} <= tables
    missing = [f"{t}.{c}" for t, c, comment in found if not comment and t != "alembic_version"]
    assert missing == []


def published_month(zone: Path, tmp_path: Path, url: str) -> Settings:
    settings = settings_for(zone, tmp_path, url)
    for day in FEB:
        sequence.run_day(settings, day)
    return settings


@pytest.fixture
def pg_month(zone, tmp_path, pg_url) -> Settings:
    return published_month(zone, tmp_path, pg_url)


def test_finance_sql_runs_unchanged_in_psql_and_duckdb(zone, tmp_path, pg_url):
    """Every file under sql/ as it is: psql (views, queries, the role) on PostgreSQL, and the
    DuckDB engine on a DuckDB warehouse (the DuckDB CLI on the package index is older than the
    engine and cannot open its files), both on the default schema `billing`."""
    files = sorted((ROOT / "sql").rglob("*.sql"))
    assert {p.parent.name for p in files} == {"views", "queries", "roles"}
    duck = f"duckdb:///{tmp_path}/w.duckdb"
    for url in (pg_url, duck):
        settings = settings_for(zone, tmp_path / url[:6], url)
        for day in DAYS:
            sequence.run_day(settings, day)
    for path in files:
        done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                               sa.engine.make_url(pg_url).database, "-h", "127.0.0.1",
                               "-U", "postgres", "-f", str(path)],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
    import duckdb

    con = duckdb.connect(f"{tmp_path}/w.duckdb")
    try:
        for path in files:
            if path.parent.name != "roles":  # roles are PostgreSQL's
                con.execute(path.read_text())  # raises on any error
    finally:
        con.close()


def test_a_month_closed_while_its_days_publish_loses_nothing(zone, tmp_path, warehouse_url):
    """Close and a re-publish of one of its days, forced to overlap: whichever commits first,
    the month's published starts = its invoiced items + the adjustments booked for its days."""
    shutil.copytree(zone, tmp_path / "landing")  # late messages are added to this copy
    settings = published_month(tmp_path / "landing", tmp_path, warehouse_url)
    late_day = FEB[13]
    line, customer = "L0011", "C001"
    late = [{"message_id": f"late-{k}", "customer_id": customer, "line_id": line,
             "contact_id": f"+49151000{k:05d}", "direction": "inbound",
             "message_type": "session", "sent_at": f"{late_day}T1{k % 10}:00:00Z"}
            for k in range(5)]
    (Path(settings.source) / "messages" / f"date={late_day}" / "late.jsonl").write_text(
        "".join(json.dumps(m) + "\n" for m in late))
    folder = _audited_run(settings, late_day)

    if warehouse_url.startswith("postgresql"):
        # the publish waits, month lock held, on a table lock the test holds; the close starts
        # and must wait for the publish; then the table lock goes
        blocker = sa.create_engine(warehouse_url, isolation_level="AUTOCOMMIT")
        with blocker.connect() as conn:
            conn.execute(sa.text("begin"))
            conn.execute(sa.text("lock table billing.session_anomalies in share mode"))
            publishing = _in_thread(lambda: sequence.publish(settings, folder))
            _wait_for_lock_waits(warehouse_url, 1)
            closing = _in_thread(lambda: invoicing.close_month(settings, FEB[0]))
            _wait_for_lock_waits(warehouse_url, 2)
            conn.execute(sa.text("commit"))
        blocker.dispose()
        published, invoices = publishing.result(), closing.result()
        assert invoices and published["adjustments"] == []  # published first: on the invoice
    else:
        # one process writes a DuckDB file at a time: both start while a session holds it and
        # retry until it lets go, then run one after the other, in either order
        import duckdb

        holder = duckdb.connect(warehouse_url.removeprefix("duckdb:///"))
        publishing = _in_subprocess(settings, "publish", folder)
        closing = _in_subprocess(settings, "close", None)
        holder.close()
        assert publishing.wait(timeout=600) == 0, publishing.stderr.read()
        assert closing.wait(timeout=600) == 0, closing.stderr.read()
        invoices = None  # issued in the subprocess; the identity below checks them
    _assert_published_is_invoiced_plus_adjusted(warehouse_url, FEB[0])
    assert rows(warehouse_url, "select count(*) as n from billing.conversation_starts"
                               " where message_id like 'late-%'")[0]["n"] == 5

    # support explains a disputed charge: price, billing date and the invoice it is on
    shown = subprocess.run([sys.executable, "-m", "billing_jobs.cli", "explain", "--line", line,
                            "--contact", "+49 151 000 00000", "--date", str(late_day),
                            "--source", settings.source, "--warehouse", warehouse_url,
                            "--format", "json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    (charge,) = [m for m in json.loads(shown.stdout)["messages"] if m["message_id"] == "late-0"]
    assert charge["billing_date"] == str(late_day) and Decimal(charge["unit_price"]) > 0
    if invoices is not None:  # published before the close (forced on PostgreSQL): invoiced
        assert charge["invoice_number"] in {i["invoice_number"] for i in invoices}
        assert charge["invoice_item"]

    # and after the close: a publish of the month's day books the difference as adjustments
    (Path(settings.source) / "messages" / f"date={late_day}" / "later.jsonl").write_text(
        json.dumps({**late[0], "message_id": "later-0", "contact_id": "+4915100099999"}) + "\n")
    done = sequence.run_day(settings, late_day)
    assert [a["quantity"] for a in done["adjustments"]] == [1]
    _assert_published_is_invoiced_plus_adjusted(warehouse_url, FEB[0])


def _audited_run(settings: Settings, day: dt.date):
    from helpers import write_day

    folder = write_day(settings, day)
    sequence.audit(settings, folder)
    return folder


class _Thread(threading.Thread):
    def __init__(self, work):
        super().__init__(daemon=True)
        self.work, self.value, self.error = work, None, None

    def run(self):
        try:
            self.value = self.work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def result(self, timeout: float = 600):
        self.join(timeout)
        assert not self.is_alive(), "still waiting"
        if self.error:
            raise self.error
        return self.value


def _in_thread(work) -> _Thread:
    thread = _Thread(work)
    thread.start()
    return thread


def _wait_for_lock_waits(url: str, n: int, timeout: float = 120) -> None:
    """Until `n` billing-jobs sessions wait for a lock (the real signal, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = rows(url, "select count(*) as n from pg_stat_activity where application_name ="
                            " 'billing-jobs' and wait_event_type = 'Lock'")[0]["n"]
        if waiting >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} billing-jobs sessions waited for a lock")


def _in_subprocess(settings: Settings, what: str, folder) -> subprocess.Popen:
    code = ("import sys, datetime as dt; from billing_jobs import sequence, invoicing;"
            "from billing_jobs.config import Settings; from billing_jobs.run_folder import "
            "RunFolder; s = Settings.resolve(source=sys.argv[1], warehouse_url=sys.argv[2],"
            " staging=sys.argv[3]);"
            + ("sequence.publish(s, RunFolder(sys.argv[4]))" if what == "publish" else
               "invoicing.close_month(s, dt.date(2026, 2, 1))"))
    return subprocess.Popen([sys.executable, "-c", code, settings.source, settings.warehouse_url,
                             str(settings.staging), str(folder or "")],
                            stderr=subprocess.PIPE, text=True)


def _assert_published_is_invoiced_plus_adjusted(url: str, month: dt.date) -> None:
    published = rows(url, "select count(*) as n from billing.conversation_starts where"
                          " billing_date between :a and :b", a=month, b=FEB[-1])[0]["n"]
    invoiced = rows(url, "select coalesce(sum(quantity), 0) as n from billing.invoice_items it"
                         " join billing.invoices i using (invoice_number) where i.month = :m"
                         " and it.kind = 'line'", m=month)[0]["n"]
    adjusted = rows(url, "select coalesce(sum(quantity), 0) as n from billing.adjustments"
                         " where billing_date between :a and :b", a=month, b=FEB[-1])[0]["n"]
    assert published == invoiced + adjusted
    assert all(d["unexplained_quantity"] == 0 for d in rows(
        url, "select * from billing.closed_month_differences"))


def test_a_finance_reader_cannot_block_or_break_a_run(zone, tmp_path, pg_url, pg_admin):
    """A real read-only user holds an open read of every view and the advisory locks older
    releases waited for, and tries the job's lock rows: the runs and the close go through."""
    settings = settings_for(zone, tmp_path, pg_url, lock_wait_s="10")
    for day in FEB[:-1]:
        sequence.run_day(settings, day)
    done = subprocess.run([sys.executable, "-m", "billing_jobs.cli", "warehouse",
                           "grant-finance", "--role", "billing_finance", "--warehouse", pg_url],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    analyst = f"analyst_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"drop role if exists {analyst}"))
        conn.execute(sa.text(f"create role {analyst} login in role billing_finance"))
    as_analyst = sa.create_engine(sa.engine.make_url(pg_url).set(username=analyst),
                                  poolclass=sa.pool.NullPool)
    try:
        with as_analyst.connect() as conn:  # one open transaction for the whole run
            for view in migrate.VIEWS:
                conn.execute(sa.text(f"select * from billing.{view}")).all()
            for key in (f"billing_date:{FEB[-1]}", f"billing_date:{FEB[0]}", "billing_close"):
                conn.execute(sa.text("select pg_advisory_lock(hashtext(:k))"), {"k": key})
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                with conn.begin_nested():
                    conn.execute(sa.text("select * from billing.job_locks for share")).all()
            sequence.run_day(settings, FEB[-1])
            sequence.run_day(settings, FEB[0])
            invoices = invoicing.close_month(settings, FEB[0])
            assert invoices
    finally:
        as_analyst.dispose()
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f"drop owned by {analyst}"))
            conn.execute(sa.text(f"drop role if exists {analyst}"))


def test_a_lock_wait_is_bounded_and_names_the_holder(zone, tmp_path, pg_url):
    settings = settings_for(zone, tmp_path, pg_url, lock_wait_s="2")
    sequence.run_day(settings, DAYS[0])
    holder = sa.create_engine(pg_url, connect_args={"application_name": "nightly-other"})
    with holder.connect() as conn, conn.begin():
        pid = conn.execute(sa.text("select pg_backend_pid()")).scalar()
        conn.execute(sa.text("select * from billing.job_locks where name = :n for update"),
                     {"n": f"billing_date:{DAYS[0]}"}).all()
        started = time.monotonic()
        with pytest.raises(WarehouseError) as failed:
            sequence.run_day(settings, DAYS[0])
        assert time.monotonic() - started < 60
    holder.dispose()
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"billing date {DAYS[0]}: publish: gave up after 2 s waiting for "
                              f"a lock held by pid {pid} (user postgres, nightly-other, "
                              f"idle in transaction since ")
    (failure,) = rows(pg_url, "select * from billing.billing_runs where status = 'failed'")
    assert failure["failed_step"] == "publish" and f"pid {pid}" in failure["error"]


def test_sql_totals_round_like_invoices(tmp_path, warehouse_url):
    """One rounding rule: the view's totals of open months equal invoicing.round_total, for
    currencies with 0, 2, 3 and 4 minor digits and amounts on the half."""
    engine = warehouse.create_engine(warehouse_url)
    amounts = [Decimal(a) for a in ("0.5", "1.005", "2.0005", "-0.5", "-1.005", "3.00005",
                                    "7.4999999999", "0.0000500000")]
    with engine.connect() as conn:
        migrate.upgrade(conn, "billing", 30)
        with conn.begin():
            for i, amount in enumerate(amounts):
                for currency in ("JPY", "USD", "KWD", "CLF"):
                    conn.execute(sa.text(
                        "insert into billing.invoice_lines values (:d, :c, 'US', 'user_initiated',"
                        " :cur, :a, 1, :a, 'r')"), {"d": dt.date(2026, 1 + i, 1),
                                                     "c": f"C{i}", "cur": currency, "a": amount})
        found = conn.execute(sa.text("select * from billing.customer_month_totals")).all()
    engine.dispose()
    assert len(found) == len(amounts) * 4
    for r in found:
        assert Decimal(r.total) == invoicing.round_total(Decimal(r.exact_amount), r.currency)[0]


def test_a_renamed_customer_is_one_current_customer(zone, tmp_path, warehouse_url):
    """`customers` keeps every reference version a run used; `current_customers` has each
    customer once, with the newest name."""
    shutil.copytree(zone, tmp_path / "landing")
    settings = settings_for(tmp_path / "landing", tmp_path, warehouse_url)
    sequence.run_day(settings, DAYS[0])
    path = tmp_path / "landing" / "reference" / "customers.csv"
    path.write_text(path.read_text().replace("Customer 001 Ltd", "Customer One GmbH"))
    sequence.run_day(settings, DAYS[1])
    versions = rows(warehouse_url, "select * from billing.customers where customer_id = 'C001'")
    assert sorted(v["name"] for v in versions) == ["Customer 001 Ltd", "Customer One GmbH"]
    current = rows(warehouse_url, "select * from billing.current_customers")
    assert len(current) == len({c["customer_id"] for c in current})
    assert [c["name"] for c in current if c["customer_id"] == "C001"] == ["Customer One GmbH"]


def test_runs_starting_side_by_side_on_an_empty_warehouse_create_it_once(pg_url):
    """The first runs of a backfill upgrade an empty PostgreSQL warehouse at the same moment:
    one creates the schema, the others wait for it and find it current."""
    def upgrade() -> tuple:
        engine = warehouse.create_engine(pg_url)
        try:
            with engine.connect() as conn:
                return migrate.upgrade(conn, "billing", 60)
        finally:
            engine.dispose()

    threads = [_in_thread(upgrade) for _ in range(4)]
    results = sorted((r.result() for r in threads), key=str)
    assert results.count((None, migrate.HEAD)) == 1
    assert results.count((migrate.HEAD, migrate.HEAD)) == 3
    assert rows(pg_url, "select version_num from billing.alembic_version") == [
        {"version_num": migrate.HEAD}]
