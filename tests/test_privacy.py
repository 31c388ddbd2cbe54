"""No phone number outside the landing zone: not in any warehouse column, not in any staged file
a run leaves behind (after a successful run and after a failed sharded one), not in anything a
command prints or an export writes, in any spelling. And the public demo secret never keys a
production warehouse."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_jobs import landing
from billing_jobs.config import Settings
from billing_jobs.errors import ConfigError
from billing_jobs.generate import generate
from billing_jobs.pseudonym import contact_key, contact_keys
from billing_jobs.run_folder import read_arrow

BIN = Path(sys.executable).parent
START = dt.date(2026, 3, 1)


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    """Generated traffic, plus rows with a number where it does not belong: in the customer,
    line and status columns, and in a CSV row with a cell too many."""
    source = tmp_path_factory.mktemp("privacy") / "landing"
    generate(source, START, days=2, messages_per_day=800, seed=9, fmt="mixed")
    part = source / "messages" / f"date={START}"
    rows = [{"message_id": "p1", "customer_id": "+5511900000001", "line_id": "L0011",
             "contact_id": "+5511900000002", "direction": "inbound", "message_type": "session",
             "sent_at": f"{START}T09:00:00Z"},
            {"message_id": "p2", "customer_id": "C001", "line_id": "5511900000003",
             "contact_id": "5511900000004", "direction": "inbound", "message_type": "session",
             "sent_at": f"{START}T09:00:00Z"},
            {"message_id": "p3", "customer_id": "C001", "line_id": "L0011",
             "contact_id": "+55 11 900000005", "direction": "inbound", "message_type": "session",
             "sent_at": f"{START}T09:00:00Z", "status": "+5511900000006"}]
    (part / "odd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (part / "odd.csv").write_text(
        "message_id,customer_id,line_id,contact_id,direction,message_type,sent_at\n"
        f"p4,C001,L0011,+5511900000007,inbound,session,{START}T09:00:00Z,+5511900000008\n")
    return source


def phone_numbers(source: Path) -> set[str]:
    """Every number of the landing zone that is, or sits where, a phone number: all contact ids
    as read (valid or not), and the planted ones; each with and without `+`, spaces removed."""
    found = set()
    for path in sorted([*(source / "messages").rglob("*"),
                        *(source / "provider_conversations").rglob("*")]):
        if path.suffix not in (".parquet", ".csv", ".jsonl"):
            continue
        raw = landing.read_raw(path, ("contact_id",), ())
        if "contact_id" in raw.column_names:
            found |= {str(v) for v in raw.column("contact_id").to_pylist() if v is not None}
    found |= {f"+55119000000{k:02d}" for k in range(1, 9)}
    spellings = set()
    for n in found:
        digits = n.replace(" ", "").lstrip("+")
        if digits.isdigit() and len(digits) >= 7:
            spellings |= {digits, "+" + digits}
    return spellings


def command(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "billing-jobs"), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def _warehouse_text(url: str) -> str:
    con = duckdb.connect(url.removeprefix("duckdb:///"), read_only=True)
    text = []
    for (table,) in con.execute("select table_name from information_schema.tables"
                                " where table_schema = 'billing'").fetchall():
        text += [repr(r) for r in con.execute(f"select * from billing.{table}").fetchall()]
    con.close()
    return "\n".join(text)


def _staged_text(staging: Path) -> str:
    text = []
    for path in sorted(staging.rglob("*")):
        if path.suffix == ".parquet":
            text.append(repr(pq.read_table(path).to_pylist()))
        elif path.suffix == ".arrow":  # prepared pieces, compressed: read, not grepped
            text.append(repr(read_arrow(path).to_pylist()))
        elif path.is_file():
            text.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(text)


def test_no_phone_number_leaves_the_landing_zone(zone, tmp_path):
    numbers = phone_numbers(zone)
    assert "5511900000001" in numbers and len(numbers) > 100
    env = {"BILLING_SOURCE": str(zone), "BILLING_STAGING": str(tmp_path / "staging"),
           "BILLING_WAREHOUSE_URL": f"duckdb:///{tmp_path}/w.duckdb",
           "BILLING_CONTACT_KEY_SECRET": "privacy-test-secret"}
    outputs = []
    ok = command("run", "--date", str(START), "--to", str(START + dt.timedelta(days=1)), env=env)
    assert ok.returncode == 0, ok.stderr
    outputs.append(ok)
    # a sharded run that fails after preparing its files: the prepared pieces stay (for the next
    # runs), keyed and pseudonymised
    rates = zone / "reference" / "rate_card.csv"
    saved = rates.read_text()
    rates.write_text("\n".join(r for r in saved.splitlines() if not r.startswith("US,")) + "\n")
    try:
        failed = command("run", "--date", str(START), "--shards", "4", env=env)
    finally:
        rates.write_text(saved)
    assert failed.returncode == 1 and "no rate" in failed.stderr
    outputs.append(failed)
    contact = "+5511900000002"
    outputs.append(command("explain", "--line", "L0011", "--contact", contact, "--messages",
                           str(zone / "messages"), env=env))
    outputs.append(command("reconcile", "--messages", str(zone / "messages"), "--out",
                           str(tmp_path / "starts.parquet"), env=env))
    outputs.append(command("restate", "--since", str(START), env=env))
    # WhatsApp's side, with a bad row whose number sits in another column
    second = START + dt.timedelta(days=1)  # the first day's last run failed above
    (zone / "provider_conversations" / f"date={second}" / "bad.jsonl").write_text(json.dumps({
        "conversation_id": "+5511900000007", "line_id": "L0011", "contact_id": "+5511900000008",
        "conversation_type": "user_initiated", "opened_at": "yesterday"}) + "\n")
    provider = command("reconcile-provider", "--date", str(second), env=env)
    assert provider.returncode == 0, provider.stderr
    outputs.append(provider)
    outputs.append(command("close", "--month", "2026-03", env=env))  # refused: days missing
    # the rest of March without traffic (and the failed first day again), so the month closes
    # and its invoices can be traced and exported
    for k in range(3, 32):
        (zone / "messages" / f"date=2026-03-{k:02d}").mkdir(exist_ok=True)
    rest = command("run", "--date", "2026-03-01", "--to", "2026-03-31", env=env)
    assert rest.returncode == 0, rest.stderr
    outputs.append(rest)
    closed = command("close", "--month", "2026-03", env=env)
    assert closed.returncode == 0 and "invoice 1:" in closed.stdout, closed.stderr
    outputs.append(closed)
    outputs.append(command("trace", "--invoice", "1", env=env))
    exported = command("export", "--month", "2026-03", "--out", str(tmp_path / "export"),
                       env=env)
    assert exported.returncode == 0, exported.stderr
    outputs.append(exported)

    assert list((tmp_path / "staging" / "prepared").glob("*/0.arrow"))  # looked at below
    haystacks = {
        "warehouse": _warehouse_text(env["BILLING_WAREHOUSE_URL"]),
        "staging": _staged_text(tmp_path / "staging"),
        "exported invoices": _staged_text(tmp_path / "export"),
        **{f"{' '.join(o.args[1:3])} output": o.stdout + o.stderr for o in outputs},
    }
    assert "privacy-test-secret" not in "".join(haystacks.values())
    leaks = {where: sorted(n for n in numbers if n in text)[:3]
             for where, text in haystacks.items()}
    assert {where: hits for where, hits in leaks.items() if hits} == {}


def test_the_demo_secret_is_refused_for_a_production_warehouse(zone, tmp_path, pg_url,
                                                               monkeypatch):
    monkeypatch.delenv("BILLING_ALLOW_DEMO_SECRET")
    monkeypatch.delenv("BILLING_CONTACT_KEY_SECRET", raising=False)
    settings = Settings.resolve(source=str(zone), warehouse_url=pg_url)
    with pytest.raises(ConfigError, match="demo contact-key secret is refused"):
        settings.check_secret()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    proc = subprocess.run([str(BIN / "billing-jobs"), "run", "--date", str(START), "--source",
                           str(zone), "--warehouse", pg_url], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 1 and "demo contact-key secret is refused" in proc.stderr
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:  # refused before any work: nothing written
        assert conn.execute(sa.text("select count(*) from information_schema.tables"
                                    " where table_schema = 'billing'")).scalar() == 0
    engine.dispose()
    # DuckDB (demos, tests) keeps working with it, and says so; with a real secret, a key id
    assert Settings.resolve(source=str(zone), warehouse_url=f"duckdb:///{tmp_path}/w.duckdb"
                            ).check_secret() is None
    real = Settings.resolve(source=str(zone), warehouse_url=pg_url, contact_key_secret="s" * 32)
    assert real.key_id != "demo" and "s" * 32 not in real.key_id


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=20), st.from_regex(r"\A\+?[0-9]{7,15}\Z")),
                max_size=30),
       st.text(min_size=1, max_size=100))
def test_contact_keys_at_once_are_the_hmac_of_each_contact(contacts, secret):
    """The vectorised keys (two SHA-256 in DuckDB) equal hmac's, for any text and any secret,
    a secret longer than SHA-256's block included."""
    keys = contact_keys(pa.array(contacts, pa.string()), secret).to_pylist()
    assert keys == [None if c is None else contact_key(c, secret) for c in contacts]
