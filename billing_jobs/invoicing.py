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

from billing_jobs import iso, migrate, warehouse
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


def _is_closed(conn: sa.Connection, schema: str, month: dt.date) -> bool:
    return bool(warehouse.query(conn, "month_is_closed", schema, month=month))


def next_open_month(conn: sa.Connection, schema: str, after: dt.date) -> dt.date:
    month = after
    while True:
        month = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        if not _is_closed(conn, schema, month):
            return month


def book_adjustments(conn: sa.Connection, schema: str, day: dt.date, new_starts,
                     run_id: str, reason: str) -> list[dict]:
    """Inside the publish transaction, before the day's rows are replaced: if the day's month is
    closed, book what changes as adjustments on the next open month, each with a reason that
    says what changed. Returns the adjustments booked (what the caller prints, per customer).
    `new_starts` is the staged starts table, or a function that loads it (only if needed)."""
    if not _is_closed(conn, schema, month_start(day)):
        return []
    if callable(new_starts):
        new_starts = new_starts()
    columns = ("message_id", *KEY, "started_at", "rate_row", "run_id")
    old = {r["message_id"]: r for r in warehouse.query(conn, "day_starts", schema,
                                                         billing_date=day)}
    new = {r["message_id"]: r for r in new_starts.select(list(columns)).to_pylist()}

    def key_of(row: dict) -> tuple:
        return tuple(Decimal(row[k]).normalize() if k == "unit_price" else row[k] for k in KEY)

    changes: dict[tuple, list[tuple[dict, int]]] = {}
    causes: dict[tuple, dict[str, int]] = {}
    for mid in old.keys() | new.keys():
        before, after = old.get(mid), new.get(mid)
        if before and after and key_of(before) == key_of(after):
            continue
        if before and after:
            repriced = key_of(before)[:4] == key_of(after)[:4]
            cause = "repriced" if repriced else "reclassified"
        for row, sign in ((before, -1), (after, +1)):
            if row:
                key = key_of(row)
                changes.setdefault(key, []).append((row, sign))
                what = cause if before and after else ("added" if sign > 0 else "removed")
                counts = causes.setdefault(key, {})
                counts[what] = counts.get(what, 0) + sign
    booked_month = next_open_month(conn, schema, month_start(day))
    booked = []
    for key, rows in sorted(changes.items(), key=lambda kv: tuple(map(str, kv[0]))):
        quantity = sum(sign for _, sign in rows)
        if quantity == 0:
            continue
        adjustment_id = uuid.uuid4().hex
        customer, country, kind, currency, price = key
        why = f"{reason}: {_what_changed(causes[key], price)}"
        warehouse.execute(
            conn, "insert_adjustment", schema, adjustment_id=adjustment_id, billing_date=day,
            customer_id=customer, country=country, conversation_type=kind, currency=currency,
            unit_price=price, quantity=quantity, amount=quantity * price, run_id=run_id,
            reason=why, booked_month=booked_month)
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
        booked.append({"billing_date": day, "customer_id": customer, "country": country,
                       "conversation_type": kind, "currency": currency, "unit_price": price,
                       "quantity": quantity, "amount": quantity * price,
                       "booked_month": booked_month, "reason": why})
    return booked


def _what_changed(counts: dict[str, int], price: Decimal) -> str:
    """E.g. "2 starts added, 1 removed at unit price 0.0266": starts that moved from one price
    (or country, type) to another count as repriced (reclassified) away from one key, to another."""
    parts = []
    for cause in ("added", "removed", "repriced", "reclassified"):
        n = counts.get(cause, 0)
        if n and cause in ("added", "removed"):
            parts.append(f"{abs(n)} start(s) {cause}")
        elif n:
            parts.append(f"{abs(n)} start(s) {cause} {'to' if n > 0 else 'away from'} this line")
    return ", ".join(parts) + f" at unit price {format(price, 'f')}"


def describe_adjustments(booked: list[dict]) -> list[str]:
    """One line per customer and currency with the adjustments a publish booked, then one per
    adjustment: what a re-run or a restatement of a closed month's day prints."""
    out = []
    by_customer: dict[tuple, list[dict]] = {}
    for a in booked:
        by_customer.setdefault((a["customer_id"], a["currency"]), []).append(a)
    for (customer, currency), rows in sorted(by_customer.items()):
        total = sum((a["amount"] for a in rows), Decimal(0))
        out.append(f"  adjustments for {customer}: {len(rows)} booked on "
                   f"{rows[0]['booked_month']:%Y-%m}, {_signed(total)} {currency}")
        for a in rows:
            out.append(f"    {a['billing_date']} {a['country']} {a['conversation_type']} "
                       f"{a['quantity']:+d} x {format(a['unit_price'], 'f')} = "
                       f"{_signed(a['amount'])}: {a['reason'].rsplit(': ', 1)[-1]}")
    return out


def _signed(amount: Decimal) -> str:
    return ("+" if amount >= 0 else "") + format(amount.normalize(), "f")


def close_month(settings: Settings, month: dt.date) -> list[dict]:
    """Issue the month's invoices; [] if it was closed already. Raises CloseRefused."""
    month = month_start(month)
    schema = settings.schema
    with migrate.writing(settings, f"closing {month:%Y-%m}") as conn:
        warehouse.hold(conn, schema, "close")
        # exclusive: publishes of the month's days finish first, or wait for this close and
        # then book their differences as adjustments (publish.py)
        warehouse.hold(conn, schema, warehouse.month_lock(month))
        if _is_closed(conn, schema, month):
            return []
        _refuse_incomplete(conn, schema, month)
        return _issue(conn, schema, month)


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
    names = {r["customer_id"]: r["name"] for r in warehouse.query(conn, "customer_names", schema)}
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
                          exact_total=exact, total=total, minor_unit=unit,
                          customer_name=names.get(customer), issue_date=issued_at.date(),
                          period_start=month, period_end=last)
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
    applied: the view billing.invoice_item_lineage, for finance too."""
    engine = warehouse.create_engine(settings.warehouse_url)
    with warehouse.connect(engine, settings.lock_wait_s) as conn:
        warehouse.require_tables(conn, settings.schema, "invoice_items", "invoice_item_lineage")
        rows = warehouse.query(conn, "invoice_lineage", settings.schema,
                               invoice_number=invoice_number, item_no=item_no)
    engine.dispose()
    return rows


EXPORT_COLUMNS = ("invoice_number", "customer_id", "customer_name", "issue_date", "period_start",
                  "period_end", "currency", "record", "item_no", "kind", "country",
                  "conversation_type", "unit_price", "quantity", "exact_amount", "amount",
                  "billing_date", "reason")


def export_month(settings: Settings, month: dt.date, out: Path,
                 customer: str | None = None) -> list[Path]:
    """One CSV per issued invoice of the month, for an accounting system (README, "Exports"):
    every row carries the invoice header; item rows (L lines, A adjustments) have the exact
    amount and the amount rounded half-up to the currency's minor unit; an R row holds what
    rounding the items leaves, so the rounded amounts of L, A and R add up exactly to T."""
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
                w.writerow(EXPORT_COLUMNS)
                for row in invoice_records(inv, items):
                    w.writerow([row.get(c, "") for c in EXPORT_COLUMNS])
            written.append(path)
    engine.dispose()
    return written


def invoice_records(inv: dict, items: list[dict]) -> list[dict]:
    """The export's rows of one invoice (see export_month); amounts as strings with exactly the
    currency's minor digits, exact amounts as plain decimal strings."""
    currency = inv["currency"]
    head = {"invoice_number": inv["invoice_number"], "customer_id": inv["customer_id"],
            "customer_name": inv["customer_name"] or "", "issue_date": inv["issue_date"],
            "period_start": inv["period_start"], "period_end": inv["period_end"],
            "currency": currency}
    total = Decimal(inv["total"])
    rows, rounded_sum = [], Decimal(0)
    for it in items:
        exact = Decimal(it["amount"])
        rounded, unit = round_total(exact, currency)
        rounded_sum += rounded
        rows.append({**head, "record": "L" if it["kind"] == "line" else "A",
                     "item_no": it["item_no"], "kind": it["kind"], "country": it["country"],
                     "conversation_type": it["conversation_type"],
                     "unit_price": _dec(it["unit_price"]), "quantity": it["quantity"],
                     "exact_amount": _dec(exact), "amount": _money(rounded, unit),
                     "billing_date": it["billing_date"] or "", "reason": it["reason"] or ""})
    _, unit = round_total(total, currency)
    rounding = total - rounded_sum
    rows.append({**head, "record": "R", "kind": "rounding", "amount": _money(rounding, unit),
                 "exact_amount": "0", "reason": "difference between the total rounded once and the items rounded "
                           "one by one"})
    rows.append({**head, "record": "T", "kind": "total", "amount": _money(total, unit),
                 "exact_amount": _dec(inv["exact_total"]),
                 "reason": f"exact total rounded half-up to {unit} decimal(s)"})
    return rows


def _money(value: Decimal, unit: int) -> str:
    return format(Decimal(value).quantize(Decimal(1).scaleb(-unit)), "f")


def _dec(value) -> str:
    return format(Decimal(value).normalize(), "f")
