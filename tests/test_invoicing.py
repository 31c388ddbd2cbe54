"""Monthly close, adjustments, lineage and exports on DuckDB and PostgreSQL: February is billed and
closed, a late message then restates one of its days, and the correction lands on March's
invoice as an adjustment, traceable to the message."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from billing_jobs import invoicing, iso, sequence
from billing_jobs.config import Settings
from billing_jobs.generate import generate
from billing_jobs.reference_data import load_reference
from helpers import warehouse_rows

FEB = [dt.date(2026, 2, 1) + dt.timedelta(days=k) for k in range(28)]
MAR = [dt.date(2026, 3, 1) + dt.timedelta(days=k) for k in range(31)]


# invoices in currencies with 2, 0 and 3 minor digits: India's lines bill in yen,
# Indonesia's in Kuwaiti dinar, at prices with more decimals than the currency has
CURRENCIES = {"IN": ("JPY", Decimal(137)), "ID": ("KWD", Decimal("0.307"))}


def several_currencies(reference: Path) -> None:
    path = reference / "rate_card.csv"
    rates = list(csv.DictReader(open(path)))
    for rate in rates:
        if rate["country"] in CURRENCIES:
            currency, factor = CURRENCIES[rate["country"]]
            rate["currency"] = currency
            rate["unit_price"] = str(Decimal(rate["unit_price"]) * factor)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rates[0]))
        writer.writeheader()
        writer.writerows(rates)


@pytest.fixture(scope="module")
def landing_zone(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    generate(root, FEB[0], days=30, messages_per_day=150, seed=3)
    several_currencies(root / "reference")
    for day in MAR[2:]:  # quiet days: their partitions exist and are empty
        folder = root / "messages" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "_SUCCESS").touch()
    return root


@pytest.fixture
def settings(landing_zone, tmp_path, warehouse_url):
    shutil.copytree(landing_zone, tmp_path / "landing")
    return Settings.resolve(source=str(tmp_path / "landing"), warehouse_url=warehouse_url,
                            staging=str(tmp_path / "staging"))


def rows(settings: Settings, sql: str, **params) -> list[dict]:
    return warehouse_rows(settings.warehouse_url, sql, **params)


def issued(settings: Settings) -> list[tuple]:
    """Every issued invoice and item, as text, to compare before and after."""
    return [tuple(map(str, r.values())) for r in rows(
        settings, "select i.*, it.* from billing.invoices i join billing.invoice_items it"
                  " using (invoice_number) order by i.invoice_number, it.item_no")]


def check_invoice_sums_and_lineage(settings: Settings, month: dt.date) -> list[dict]:
    invoices = rows(settings, "select * from billing.invoices where month = :m"
                              " order by invoice_number", m=month)
    for inv in invoices:
        items = rows(settings, "select * from billing.invoice_items where invoice_number = :n",
                     n=inv["invoice_number"])
        lines = sum((Decimal(i["amount"]) for i in items if i["kind"] == "line"), Decimal(0))
        adjustments = sum((Decimal(i["amount"]) for i in items if i["kind"] == "adjustment"),
                          Decimal(0))
        assert Decimal(inv["exact_total"]) == lines + adjustments  # exactly
        digits = Decimal(1).scaleb(-iso.MINOR_UNITS[inv["currency"]])
        assert Decimal(inv["total"]) == (lines + adjustments).quantize(digits, ROUND_HALF_UP)
        traced = invoicing.trace(settings, inv["invoice_number"])
        for item in items:
            behind = [t for t in traced if t["item_no"] == item["item_no"]]
            assert sum(t["sign"] for t in behind) == item["quantity"]
            assert sum((Decimal(t["amount"]) for t in behind), Decimal(0)) == Decimal(item["amount"])
            assert all(t["conversation_type"] == item["conversation_type"]
                       and t["country"] == item["country"] for t in behind)
    return invoices


def test_close_adjust_trace_and_export(settings, tmp_path):
    ref = load_reference(settings.reference)
    line, (customer, country) = next(iter(ref.lines.items()))
    # a template to a new contact on 12 February: charged as a business-initiated start
    attempt_day = FEB[11]
    attempt = {"message_id": "attempt-feb-12", "customer_id": customer, "line_id": line,
               "contact_id": "+4915100000666", "direction": "outbound", "message_type": "template",
               "sent_at": f"{attempt_day}T09:00:00Z", "status": "sent"}
    (tmp_path / "landing" / "messages" / f"date={attempt_day}" / "attempt.jsonl").write_text(
        json.dumps(attempt) + "\n")
    for day in FEB[:-1]:
        sequence.run_day(settings, day)
    with pytest.raises(invoicing.CloseRefused, match=r"1 day\(s\) not published: 2026-02-28 "
                                                      r"\(never run\)"):
        invoicing.close_month(settings, FEB[0])
    sequence.run_day(settings, FEB[-1])

    february = invoicing.close_month(settings, FEB[0])
    numbers = [inv["invoice_number"] for inv in february]
    assert numbers == list(range(1, len(february) + 1))  # gapless from the first
    invoices = check_invoice_sums_and_lineage(settings, FEB[0])
    (billed,) = rows(settings, "select sum(amount) as a from billing.invoice_lines"
                               " where billing_date < '2026-03-01'")
    assert sum(Decimal(i["exact_total"]) for i in invoices) == Decimal(billed["a"])
    before = issued(settings)
    assert invoicing.close_month(settings, FEB[0]) == []  # closing twice is a no-op
    assert issued(settings) == before

    # a late message for 10 February: re-publishing the day never touches the issued invoice
    late_day = FEB[9]
    late = {"message_id": "late-feb-10", "customer_id": customer, "line_id": line,
            "contact_id": "+4915100000555", "direction": "inbound", "message_type": "session",
            "sent_at": f"{late_day}T12:00:00Z"}
    (tmp_path / "landing" / "messages" / f"date={late_day}" / "late.jsonl").write_text(
        json.dumps(late) + "\n")
    done = sequence.run_day(settings, late_day)
    assert issued(settings) == before
    (adjustment,) = rows(settings, "select * from billing.adjustments")
    price = [r for r in ref.rates if r.country == country
             and r.conversation_type == "user_initiated" and r.applies_at(
                 dt.datetime(2026, 2, 10, 12, tzinfo=dt.timezone.utc))][0].unit_price
    assert (adjustment["customer_id"], adjustment["country"], adjustment["conversation_type"],
            adjustment["quantity"]) == (customer, country, "user_initiated", 1)
    assert Decimal(adjustment["amount"]) == price  # one more start: a positive adjustment
    assert str(adjustment["billing_date"]) == str(late_day)
    assert adjustment["run_id"] == done["run_id"] and "published again" in adjustment["reason"]
    shown = format(price.normalize(), "f")
    assert adjustment["reason"].endswith(f"1 start(s) added at unit price {shown}")
    assert [(a["customer_id"], a["quantity"], a["reason"]) for a in done["adjustments"]] == [
        (customer, 1, adjustment["reason"])]  # what `billing-jobs run` prints per customer
    assert invoicing.describe_adjustments(done["adjustments"])[0].startswith(
        f"  adjustments for {customer}: 1 booked on 2026-03, +{shown}")
    assert str(adjustment["booked_month"]) == "2026-03-01" and adjustment["invoice_number"] is None

    # a late status update says the 12 February template failed: it never reached the contact,
    # so its charge is taken back on the next invoice (sent < failed: the failed copy wins)
    (tmp_path / "landing" / "messages" / f"date={attempt_day}" / "late-status.jsonl").write_text(
        json.dumps({**attempt, "status": "failed"}) + "\n")
    sequence.run_day(settings, attempt_day)
    assert issued(settings) == before
    (taken_back,) = rows(settings, "select * from billing.adjustments where billing_date = :d",
                         d=attempt_day)
    business = [r for r in ref.rates if r.country == country
                and r.conversation_type == "business_initiated" and r.applies_at(
                    dt.datetime(2026, 2, 12, 9, tzinfo=dt.timezone.utc))][0].unit_price
    assert (taken_back["conversation_type"], taken_back["quantity"]) == ("business_initiated", -1)
    assert Decimal(taken_back["amount"]) == -business
    assert "1 start(s) removed" in taken_back["reason"]

    # March: quiet days and all; its close carries the adjustment
    with pytest.raises(invoicing.CloseRefused, match="31 day"):
        invoicing.close_month(settings, MAR[0])
    for day in MAR:
        sequence.run_day(settings, day)
    march = invoicing.close_month(settings, MAR[0])
    assert [inv["invoice_number"] for inv in march] == list(
        range(len(february) + 1, len(february) + len(march) + 1))
    check_invoice_sums_and_lineage(settings, MAR[0])
    items = rows(settings, "select it.*, i.customer_id from billing.invoice_items it join"
                           " billing.invoices i using (invoice_number) where kind = 'adjustment'"
                           " order by billing_date")
    assert [(str(i["billing_date"]), i["quantity"], Decimal(i["amount"])) for i in items] == [
        (str(late_day), 1, price), (str(attempt_day), -1, -business)]
    assert {i["customer_id"] for i in items} == {customer}
    assert items[0]["cause_run_id"] == done["run_id"]
    traced = [(t["message_id"], t["sign"]) for i in items
              for t in invoicing.trace(settings, i["invoice_number"], i["item_no"])]
    assert traced == [("late-feb-10", 1), ("attempt-feb-12", -1)]

    # what finance reads agrees with itself: published = invoiced + adjusted, per closed month
    differences = rows(settings, "select * from billing.closed_month_differences")
    assert {str(d["month"]) for d in differences} == {"2026-02-01", "2026-03-01"}
    assert all(d["unexplained_quantity"] == 0 and Decimal(d["unexplained_amount"]) == 0
               for d in differences)
    feb_adjusted = [d for d in differences if str(d["month"]) == "2026-02-01"
                    and d["adjusted_quantity"]]
    assert sorted(d["adjusted_quantity"] for d in feb_adjusted) == [-1, 1]
    assert rows(settings, "select * from billing.published_not_invoiced") == []
    issued_items = rows(settings, "select * from billing.issued_invoice_items")
    assert len(issued_items) == len(rows(settings, "select * from billing.invoice_items"))
    assert all(i["customer_name"] == ref.customers[i["customer_id"]] for i in issued_items)

    # exports: one CSV per invoice; every row carries the header; the rounded items and the
    # rounding item add up exactly to the stated total, written with the currency's digits
    paths = invoicing.export_month(settings, MAR[0], tmp_path / "export")
    assert len(paths) == len(march)
    every_invoice = paths + invoicing.export_month(settings, FEB[0], tmp_path / "export-feb")
    currencies = set()
    for path in every_invoice:
        records = list(csv.DictReader(open(path)))
        assert [r["record"] for r in records[-2:]] == ["R", "T"]
        head = {k: records[0][k] for k in ("invoice_number", "customer_id", "customer_name",
                                           "issue_date", "period_start", "period_end",
                                           "currency")}
        assert all({k: r[k] for k in head} == head for r in records)
        assert head["customer_name"] == ref.customers[head["customer_id"]]
        assert head["period_start"] in ("2026-02-01", "2026-03-01")
        assert head["period_end"] in ("2026-02-28", "2026-03-31")
        unit = iso.MINOR_UNITS[head["currency"]]
        currencies.add(unit)
        for r in records:
            whole, _, decimals = r["amount"].partition(".")
            assert len(decimals) == unit, r["amount"]
        items = [r for r in records if r["record"] in ("L", "A")]
        exact = sum((Decimal(r["exact_amount"]) for r in items), Decimal(0))
        stated = Decimal(records[-1]["amount"])
        assert stated == exact.quantize(Decimal(1).scaleb(-unit), ROUND_HALF_UP)
        assert sum(Decimal(r["amount"]) for r in records[:-1]) == stated  # exactly
        assert all(Decimal(r["amount"]) == Decimal(r["exact_amount"]).quantize(
            Decimal(1).scaleb(-unit), ROUND_HALF_UP) for r in items)
    assert currencies == {0, 2, 3}
    adjusted = [p for p in paths if f"-{customer}.csv" in p.name]
    assert any(r["record"] == "A" for r in csv.DictReader(open(adjusted[0])))


def test_finance_role_reads_and_cannot_write(pg_url, pg_admin, tmp_path, landing_zone):
    from billing_jobs import warehouse

    settings = Settings.resolve(source=str(landing_zone), warehouse_url=pg_url,
                                staging=str(tmp_path / "staging"))
    sequence.run_day(settings, FEB[0])
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        warehouse.grant_finance(conn, "billing", "billing_finance")
    analyst = f"analyst_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"drop role if exists {analyst}"))
        conn.execute(sa.text(f"create role {analyst} login in role billing_finance"))
    try:
        as_analyst = sa.create_engine(sa.engine.make_url(pg_url).set(username=analyst),
                                      poolclass=sa.pool.NullPool)
        with as_analyst.connect() as conn:
            assert conn.execute(sa.text("select count(*) from billing.invoice_lines")).scalar() > 0
            assert conn.execute(sa.text("select count(*) from billing.monthly_invoice_lines")
                                ).scalar() > 0
        for statement in ("insert into billing.closed_months values ('2026-01-01', now(), 0)",
                          "update billing.invoice_lines set amount = 0",
                          "delete from billing.conversation_starts",
                          "create table billing.mine (a int)"):
            with as_analyst.connect() as conn, pytest.raises(sa.exc.ProgrammingError,
                                                             match="permission denied"):
                conn.execute(sa.text(statement))
        as_analyst.dispose()
    finally:
        engine.dispose()
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f"drop owned by {analyst}"))
            conn.execute(sa.text(f"drop role if exists {analyst}"))
