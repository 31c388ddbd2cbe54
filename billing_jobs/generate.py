"""Synthetic landing zone and reference set (data-contracts.md §1-2) for demos, tests and benchmarks.

Traffic is built from *conversations*: a contact writes in (or a business sends a template), then
messages go back and forth with minute-scale gaps. On top of that the generator adds what real
logs have: bursts at peak hours, same-second ties, answers that come after the 24 h window,
templates sent minutes apart, duplicate copies with advancing status, failed sends, the odd
conflicting copy and the odd broken row, several lines per customer, and conversations that run
past midnight into the next day's partition as a separate ("late") file.

Everything derives from one seed: the same arguments write the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SECOND_NS = 10**9
DAY_S = 24 * 3600
CHUNK_ROWS = 4_000_000  # rows generated at once: bounds memory for very large days

# country: (user_initiated, business_initiated) in USD; US is the seed's example rate card row.
RATES = {
    "US": ("0.0100", "0.0266"),
    "BR": ("0.0300", "0.0625"),
    "DE": ("0.0768", "0.1365"),
    "GB": ("0.0388", "0.0705"),
    "IN": ("0.0040", "0.0107"),
    "ID": ("0.0220", "0.0411"),
    "MX": ("0.0095", "0.0436"),
}
# From the middle of the generated period, business-initiated starts in the US get cheaper, so every
# generated data set of two days or more has a price change inside it.
PRICE_CHANGE = ("US", "business_initiated", "0.0250")
RATES_VALID_FROM = "2020-01-01"


@dataclass(frozen=True)
class World:
    """Customers, lines and streams (line, contact pairs) shared by all generated days."""

    customers: list[str]
    line_ids: list[str]
    line_customer: list[str]
    line_country: list[str]
    stream_line: np.ndarray
    stream_contact: np.ndarray  # index into contacts
    contacts: pa.Array  # contact_id strings
    stream_weight: np.ndarray  # cumulative, for drawing a stream per conversation


def build_world(rng: np.random.Generator, messages_per_day: int) -> World:
    n_customers = int(np.clip(messages_per_day // 20_000, 4, 40))
    customers = [f"C{i:03d}" for i in range(1, n_customers + 1)]
    countries = list(RATES)
    line_ids, line_customer, line_country = [], [], []
    for c, customer in enumerate(customers):
        for k in range(int(rng.integers(1, 4))):  # one to three lines per customer
            line_ids.append(f"L{c + 1:03d}{k + 1}")
            line_customer.append(customer)
            line_country.append(countries[int(rng.integers(len(countries)))])
    n_streams = max(20, messages_per_day // 8)
    n_contacts = max(10, int(n_streams * 0.9))  # some contacts talk to several lines
    stream_line = rng.integers(0, len(line_ids), n_streams)
    stream_contact = rng.integers(0, n_contacts, n_streams)
    contacts = pc.binary_join_element_wise(
        "+", pc.cast(pa.array(5511_9000_0000 + np.arange(n_contacts, dtype=np.int64)), pa.string()), ""
    )
    weight = rng.pareto(2.5, n_streams) + 1.0  # a few very chatty streams, a long tail
    return World(customers, line_ids, line_customer, line_country, stream_line, stream_contact,
                 contacts, np.cumsum(weight) / weight.sum())


def _message_ids(first: int, count: int, seed: int) -> pa.Array:
    """Unique, unordered-looking ids: an odd multiplier is a bijection on 64-bit integers."""
    counter = np.arange(first, first + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = counter * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed * 7919 + 1)
    return pc.binary_join_element_wise("wamid.", pc.cast(pa.array(mixed), pa.string()), "")


def conversations(rng: np.random.Generator, world: World, day: dt.date, rows: int,
                  first_id: int, seed: int) -> pa.Table:
    """About `rows` message rows from conversations starting on `day` (some end on the next)."""
    mean_len = 5.0
    n_conv = max(1, int(rows / mean_len * 1.1))
    length = 1 + rng.geometric(1 / mean_len, n_conv)
    keep = np.searchsorted(np.cumsum(length), rows) + 1
    length = length[:keep]
    length[-1] -= max(0, int(length.sum()) - rows)
    n_conv, total = len(length), int(length.sum())

    stream = np.minimum(np.searchsorted(world.stream_weight, rng.random(n_conv)),
                        len(world.stream_line) - 1)
    # bursts: 60 % of conversations start around 10:00 or 19:00 UTC, the rest any time
    peak = rng.random(n_conv) < 0.6
    start = np.where(peak, rng.choice([10 * 3600, 19 * 3600], n_conv) + rng.normal(0, 5400, n_conv),
                     rng.uniform(0, DAY_S, n_conv))
    start = np.clip(start, 0, DAY_S - 1).astype(np.int64)
    # who opens: 60 % the contact, 39.8 % a template, 0.2 % a free-form sent with no session
    opener = rng.choice(3, n_conv, p=[0.6, 0.398, 0.002])

    conv = np.repeat(np.arange(n_conv), length)
    first = np.cumsum(length) - length
    pos = np.arange(total) - np.repeat(first, length)
    roll, roll2 = rng.random(total), rng.random(total)
    inbound = np.where(pos == 0, opener[conv] == 0, roll < 0.5)
    template = np.where(pos == 0, opener[conv] == 1, (roll >= 0.5) & (roll < 0.53))
    # after a template, usually the contact answers; 20 % of the time a second attempt follows
    after_template = (pos == 1) & (opener[conv] == 1)
    inbound = np.where(after_template, roll2 >= 0.2, inbound)
    template = np.where(after_template, roll2 < 0.2, template) & ~inbound

    gap = rng.exponential(180, total).astype(np.int64)  # seconds
    gap[rng.random(total) < 0.05] = 0  # same-second ties
    answer = after_template & inbound
    late = answer & (rng.random(total) < 0.15)  # the answer comes after the 24 h window
    gap[late] = rng.integers(20 * 3600, 40 * 3600, int(late.sum()))
    slow = answer & ~late & (rng.random(total) < 0.3)
    gap[slow] = rng.integers(3600, 20 * 3600, int(slow.sum()))
    gap[first] = 0
    elapsed = np.cumsum(gap)
    seconds = start[conv] + elapsed - np.repeat(elapsed[first], length)

    status_pick = rng.choice(4, total, p=[0.10, 0.03, 0.40, 0.47])  # sent failed delivered read
    status = np.where(inbound, 3, status_pick)
    stream_of_row = stream[conv]

    day_start = int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp())
    sent_ns = (day_start + seconds) * SECOND_NS
    line = world.stream_line[stream_of_row]
    table = pa.table(
        {
            "message_id": _message_ids(first_id, total, seed),
            "customer_id": pc.take(pa.array(world.line_customer), pa.array(line)),
            "line_id": pc.take(pa.array(world.line_ids), pa.array(line)),
            "contact_id": pc.take(world.contacts, pa.array(world.stream_contact[stream_of_row])),
            "direction": pc.take(pa.array(["outbound", "inbound"]), pa.array(inbound.astype(np.int8))),
            "message_type": pc.take(pa.array(["session", "template"]),
                                    pa.array(template.astype(np.int8))),
            "sent_at": pa.array(sent_ns, pa.timestamp("ns", "UTC")).cast(pa.timestamp("ms", "UTC")),
            "status": pc.take(pa.array(["sent", "failed", "delivered", "read"]), pa.array(status)),
        }
    )
    return _with_noise(rng, table)


def _with_noise(rng: np.random.Generator, table: pa.Table) -> pa.Table:
    """Duplicates (mostly status updates), a few conflicting copies and a few broken rows."""
    n = table.num_rows
    dup = np.flatnonzero(rng.random(n) < 0.01)
    copies = table.take(pa.array(dup))
    copies = copies.set_column(
        copies.schema.get_field_index("status"), "status",
        pc.take(pa.array(["sent", "delivered", "read"]), pa.array(rng.integers(0, 3, len(dup)))),
    )
    conflict = np.flatnonzero(rng.random(n) < 0.0002)
    moved = table.take(pa.array(conflict))
    moved = moved.set_column(
        moved.schema.get_field_index("sent_at"), "sent_at",
        pc.add(moved.column("sent_at"), pa.scalar(1000, pa.duration("ms"))),
    )
    broken = table.take(pa.array(np.flatnonzero(rng.random(n) < 0.0005)))
    broken = broken.set_column(
        broken.schema.get_field_index("direction"), "direction",
        pa.array(["sideways"] * broken.num_rows, pa.string()),
    )
    mixed = pa.concat_tables([table, copies, moved, broken])
    # files are not in time order; cut back to n rows so a partition's size is what was asked for
    return mixed.take(pa.array(rng.permutation(mixed.num_rows)[:n]))


def write_reference(out: Path, world: World, start: dt.date, days: int) -> None:
    ref = out / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    with open(ref / "customers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "name"])
        w.writerows([c, f"Customer {c[1:]} Ltd"] for c in world.customers)
    with open(ref / "lines.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["line_id", "customer_id", "country"])
        w.writerows(zip(world.line_ids, world.line_customer, world.line_country))
    change_day = (start + dt.timedelta(days=days // 2)).isoformat() if days >= 2 else None
    with open(ref / "rate_card.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["country", "conversation_type", "unit_price", "currency", "valid_from",
                    "valid_to"])
        for country, (user, business) in RATES.items():
            w.writerow([country, "user_initiated", user, "USD", RATES_VALID_FROM, ""])
            changes = change_day and (country, "business_initiated") == PRICE_CHANGE[:2]
            w.writerow([country, "business_initiated", business, "USD", RATES_VALID_FROM,
                        change_day if changes else ""])
            if changes:
                w.writerow([country, "business_initiated", PRICE_CHANGE[2], "USD", change_day, ""])


def _write(table: pa.Table, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path.with_suffix(".parquet"), compression="zstd")
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        text = table.set_column(
            table.schema.get_field_index("sent_at"), "sent_at",
            pc.strftime(table.column("sent_at"), "%Y-%m-%dT%H:%M:%SZ"),
        )
        pcsv.write_csv(text, path.with_suffix(".csv"))
    else:
        import json

        india = dt.timezone(dt.timedelta(hours=5, minutes=30))  # offsets other than Z occur too
        with open(path.with_suffix(".jsonl"), "w") as f:
            for row in table.to_pylist():
                row["sent_at"] = row["sent_at"].astimezone(india).isoformat()
                f.write(json.dumps(row) + "\n")


def generate(out: str | Path, start: dt.date, days: int, messages_per_day: int, seed: int = 7,
             fmt: str = "parquet", provider: bool = True) -> dict:
    """Write `days` partitions of exactly `messages_per_day` rows each, plus the reference set,
    and (`provider`) WhatsApp's conversations for them (generate_provider.py).

    `fmt` is parquet, csv, jsonl, or mixed (each day in the next format, round robin)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    world = build_world(rng, messages_per_day)
    write_reference(out, world, start, days)
    formats = ["parquet", "csv", "jsonl"] if fmt == "mixed" else [fmt]
    end = start + dt.timedelta(days=days)
    landed: dict[dt.date, int] = {}  # rows written per partition, spills from earlier days included
    first_id = 0
    for d in range(days):
        day = start + dt.timedelta(days=d)
        for chunk in range(10_000):  # top up until the partition holds exactly messages_per_day
            rows = min(messages_per_day - landed.get(day, 0), CHUNK_ROWS)
            if rows <= 0:
                break
            table = conversations(rng, world, day, rows, first_id, seed)
            first_id += rows
            dates = pc.cast(pc.cast(table.column("sent_at"), pa.timestamp("ms")), pa.date32())
            for target in sorted(set(dates.to_pylist())):
                if target >= end:
                    continue  # the conversation ran past the generated period
                part = table.filter(pc.equal(dates, pa.scalar(target, pa.date32())))
                name = f"part-{day:%Y%m%d}-{chunk:03d}" + ("" if target == day else "-late")
                _write(part, out / "messages" / f"date={target}" / name, formats[d % len(formats)])
                landed[target] = landed.get(target, 0) + part.num_rows
    for d in range(days):
        (out / "messages" / f"date={start + dt.timedelta(days=d)}" / "_SUCCESS").touch()
    summary = {"rows": sum(landed.values()), "lines": len(world.line_ids),
               "customers": len(world.customers)}
    if provider:
        from billing_jobs.generate_provider import write_provider

        rates = {country: prices for country, prices in RATES.items()}
        manifest = write_provider(out, start, days, seed,
                                  dict(zip(world.line_ids, world.line_country)), rates, formats)
        summary["provider_conversations"] = manifest["conversations"]
    return summary
