"""Monthly close, adjustments, lineage and exports: what finance needs once invoices are issued.

- **close** turns a month's published days into one invoice per (customer, currency), with lines
  per (country, conversation type, unit price), gapless numbers and a total rounded half-up to the
  currency's minor unit. Issued invoices never change.
- **adjustments**: publishing a day of a closed month again books the difference per (customer,
  country, type, unit price) on the next open month, with the day, the run and the reason.
- **lineage**: every invoice item keeps the starts behind it as they were when it was issued.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from billing_jobs import iso, warehouse
from billing_jobs.config import Settings
from billing_jobs.errors import CloseRefused, UsageError

KEY = ("customer_id", "country", "conversation_type", "currency", "unit_price")


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def month_days(month: dt.date) -> list[dt.date]:
    return [month.replace(day=d) for d in range(1, calendar.monthrange(month.year, month.month)[1] + 1)]


def round_total(amount: Decimal, currency: str) -> tuple[Decimal, int]:
    """Half-up to the currency's minor unit (ISO 4217)."""
    unit = iso.MINOR_UNITS.get(currency, 2)
    return amount.quantize(Decimal(1).scaleb(-unit), rounding=ROUND_HALF_UP), unit


def _rows(conn: sa.Connection, sql: str, **params) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params).all()]


def _is_closed(conn: sa.Connection, schema: str, month: dt.date) -> bool:
    return bool(warehouse.query(conn, "month_is_closed", schema, month=month))


def next_open_month(conn: sa.Connection, schema: str, after: dt.date) -> dt.date:
    month = after
    while True:
        month = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        if not _is_closed(conn, schema, month):
            return month


def book_adjustments(conn: sa.Connection, schema: str, day: dt.date, new_starts,
                     run_id: str, reason: str) -> int:
    """Inside the publish transaction, before the day's rows are replaced: if the day's month is
    closed, book what changes as adjustments on the next open month. Returns how many.
    `new_starts` is the staged starts table, or a function that loads it (only if needed)."""
    if not _is_closed(conn, schema, month_start(day)):
        return 0
    if callable(new_starts):
        new_starts = new_starts()
    columns = ("message_id", *KEY, "started_at", "rate_row", "run_id")
    old = {r["message_id"]: r for r in warehouse.query(conn, "day_starts", schema,
                                                         billing_date=day)}
    new = {r["message_id"]: r for r in new_starts.select(list(columns)).to_pylist()}

    def same(a: dict, b: dict) -> bool:
        return all(a[k] == b[k] if k != "unit_price" else Decimal(a[k]) == Decimal(b[k])
                   for k in KEY)

    changes: dict[tuple, list[tuple[dict, int]]] = {}
    for mid in old.keys() | new.keys():
        before, after = old.get(mid), new.get(mid)
        if before and after and same(before, after):
            continue
        for row, sign in ((before, -1), (after, +1)):
            if row:
                key = tuple(Decimal(row[k]).normalize() if k == "unit_price" else row[k] for k in KEY)
                changes.setdefault(key, []).append((row, sign))
    booked_month = next_open_month(conn, schema, month_start(day))
    count = 0
    for key, rows in sorted(changes.items(), key=lambda kv: tuple(map(str, kv[0]))):
        quantity = sum(sign for _, sign in rows)
        if quantity == 0:
            continue
        adjustment_id = uuid.uuid4().hex
        customer, country, kind, currency, price = key
        warehouse.execute(
            conn, "insert_adjustment", schema, adjustment_id=adjustment_id, billing_date=day,
            customer_id=customer, country=country, conversation_type=kind, currency=currency,
            unit_price=price, quantity=quantity, amount=quantity * price, run_id=run_id,
            reason=reason, booked_month=booked_month)
        warehouse.insert_arrow(conn, schema, "adjustment_starts", pa.Table.from_pylist([
            {"adjustment_id": adjustment_id, "message_id": row["message_id"], "billing_date": day,
             "started_at": row["started_at"], "unit_price": Decimal(row["unit_price"]),
             "rate_row": row["rate_row"], "sign": sign, "run_id": row["run_id"]}
            for row, sign in rows],
            schema=pa.schema([("adjustment_id", pa.string()), ("message_id", pa.string()),
                              ("billing_date", pa.date32()),
                              ("started_at", pa.timestamp("us", "UTC")),
                              ("unit_price", pa.decimal128(20, 10)), ("rate_row", pa.int32()),
                              ("sign", pa.int32()), ("run_id", pa.string())])))
        count += 1
    return count


def close_month(settings: Settings, month: dt.date) -> list[dict]:
    """Issue the month's invoices; [] if it was closed already. Raises CloseRefused."""
    month = month_start(month)
    engine = warehouse.create_engine(settings.warehouse_url)
    schema = settings.schema
    try:
        with warehouse.connect(engine, settings.lock_wait_s) as conn:
            with conn.begin():
                warehouse.ensure_schema(conn, schema)
            with conn.begin():
                warehouse.lock_key(conn, "billing_close", settings.lock_wait_s)
                if _is_closed(conn, schema, month):
                    return []
                _refuse_incomplete(conn, schema, month)
                return _issue(conn, schema, month)
    finally:
        engine.dispose()


def _refuse_incomplete(conn: sa.Connection, schema: str, month: dt.date) -> None:
    latest: dict[dt.date, str] = {}
    for r in warehouse.query(conn, "month_run_statuses", schema, first_day=month,
                             last_day=month_days(month)[-1]):
        latest[dt.date.fromisoformat(str(r["billing_date"]))] = r["status"]
    problems = []
    for day in month_days(month):
        status = latest.get(day)
        if status != "published":
            problems.append(f"{day} ({'never run' if status is None else 'last run ' + status})")
    if problems:
        raise CloseRefused(f"cannot close {month:%Y-%m}: {len(problems)} day(s) not published: "
                           + ", ".join(problems))


def _issue(conn: sa.Connection, schema: str, month: dt.date) -> list[dict]:
    last = month_days(month)[-1]
    lines = warehouse.query(conn, "month_invoice_lines", schema, first_day=month, last_day=last)
    adjustments = warehouse.query(conn, "month_open_adjustments", schema, month=month)
    number = warehouse.query(conn, "last_invoice_number", schema)[0]["last_number"]
    issued_at = dt.datetime.now(dt.timezone.utc)
    invoices = []
    for customer, currency in sorted({(r["customer_id"], r["currency"])
                                      for r in lines + adjustments}):
        number += 1
        items = [r for r in lines if (r["customer_id"], r["currency"]) == (customer, currency)]
        adds = [r for r in adjustments if (r["customer_id"], r["currency"]) == (customer, currency)]
        lines_amount = sum((Decimal(r["amount"]) for r in items), Decimal(0))
        adjustments_amount = sum((Decimal(r["amount"]) for r in adds), Decimal(0))
        exact = lines_amount + adjustments_amount
        total, unit = round_total(exact, currency)
        warehouse.execute(conn, "insert_invoice", schema, invoice_number=number, month=month,
                          customer_id=customer, currency=currency, issued_at=issued_at,
                          lines_amount=lines_amount, adjustments_amount=adjustments_amount,
                          exact_total=exact, total=total, minor_unit=unit)
        for item_no, r in enumerate(items, start=1):
            _item(conn, schema, number, item_no, "line", r)
            warehouse.execute(conn, "insert_line_item_starts", schema, invoice_number=number,
                              item_no=item_no, first_day=month, last_day=last,
                              customer_id=customer, currency=currency, country=r["country"],
                              conversation_type=r["conversation_type"],
                              unit_price=r["unit_price"])
        for item_no, r in enumerate(adds, start=len(items) + 1):
            _item(conn, schema, number, item_no, "adjustment", r)
            warehouse.execute(conn, "insert_adjustment_item_starts", schema,
                              invoice_number=number, item_no=item_no,
                              adjustment_id=r["adjustment_id"])
            warehouse.execute(conn, "mark_adjustment_invoiced", schema, invoice_number=number,
                              adjustment_id=r["adjustment_id"])
        invoices.append({"invoice_number": number, "customer_id": customer, "currency": currency,
                         "exact_total": exact, "total": total, "items": len(items) + len(adds)})
    warehouse.execute(conn, "insert_closed_month", schema, month=month, closed_at=issued_at,
                      invoices=len(invoices))
    return invoices


def _item(conn, schema, number, item_no, kind, r) -> None:
    adjustment = kind == "adjustment"
    warehouse.execute(conn, "insert_invoice_item", schema, invoice_number=number,
                      item_no=item_no, kind=kind, country=r["country"],
                      conversation_type=r["conversation_type"], unit_price=r["unit_price"],
                      quantity=r["quantity"], amount=r["amount"],
                      billing_date=r["billing_date"] if adjustment else None,
                      cause_run_id=r["run_id"] if adjustment else None,
                      reason=r["reason"] if adjustment else None)


def trace(settings: Settings, invoice_number: int, item_no: int | None = None) -> list[dict]:
    """The conversation starts behind an invoice (or one of its items), with the rate-card row
    applied: the documented lineage query is sql/queries/invoice_item_lineage.sql."""
    sql = warehouse.sql_file(warehouse.SQL_DIR / "queries" / "invoice_item_lineage.sql",
                             settings.schema)
    engine = warehouse.create_engine(settings.warehouse_url)
    with warehouse.connect(engine, settings.lock_wait_s) as conn:
        warehouse.require_tables(conn, settings.schema, "invoice_items", "invoice_item_starts")
        rows = _rows(conn, sql, invoice_number=invoice_number, item_no=item_no)
    engine.dispose()
    return rows


def export_month(settings: Settings, month: dt.date, out: Path,
                 customer: str | None = None) -> list[Path]:
    """One CSV per issued invoice of the month: H (header), L (lines), A (adjustments), T (total)
    records, amounts as exact decimal strings."""
    month = month_start(month)
    out.mkdir(parents=True, exist_ok=True)
    engine = warehouse.create_engine(settings.warehouse_url)
    written = []
    with warehouse.connect(engine, settings.lock_wait_s) as conn:
        warehouse.require_tables(conn, settings.schema, "invoices", "invoice_items")
        invoices = warehouse.query(conn, "month_invoices", settings.schema, month=month,
                                   customer_id=customer)
        for inv in invoices:
            items = warehouse.query(conn, "invoice_items", settings.schema,
                                    invoice_number=inv["invoice_number"])
            path = out / f"invoice-{inv['invoice_number']:06d}-{inv['customer_id']}.csv"
            if path.resolve().parent != out.resolve():  # ids are checked on load; never trust a name
                raise UsageError(f"invoice {inv['invoice_number']}: customer id "
                                 f"{inv['customer_id']!r} would write outside {out}")
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["record", "invoice_number", "month", "customer_id", "currency",
                            "item_no", "kind", "country", "conversation_type", "unit_price",
                            "quantity", "amount", "billing_date", "cause_run_id", "reason"])
                head = [inv["invoice_number"], f"{month:%Y-%m}", inv["customer_id"], inv["currency"]]
                w.writerow(["H", *head, "", "", "", "", "", "", "", "", "", ""])
                for it in items:
                    w.writerow(["L" if it["kind"] == "line" else "A", *head, it["item_no"],
                                it["kind"], it["country"], it["conversation_type"],
                                _dec(it["unit_price"]), it["quantity"], _dec(it["amount"]),
                                it["billing_date"] or "", it["cause_run_id"] or "",
                                it["reason"] or ""])
                w.writerow(["T", *head, "", "total", "", "", "", "", _dec(inv["total"]), "", "",
                            f"exact {_dec(inv['exact_total'])}, rounded half-up to "
                            f"{inv['minor_unit']} decimals"])
            written.append(path)
    engine.dispose()
    return written


def _dec(value) -> str:
    return format(Decimal(value).normalize(), "f")
