"""WhatsApp's side of generated traffic (data-contracts.md §5): the conversations its 2022
conversation-based model opens for the messages `generate` wrote, plus known noise.

The model: a user-initiated conversation opens when a business message (template or not) is
delivered inside the customer-service window (24 h after the contact's last message) with none
open; a business-initiated one when a template is delivered outside it with none open; each
lasts 24 h and opens at delivery, seconds after sending. Failed and undelivered messages open
nothing.

The noise, chosen from disjoint sets of conversations and written to `provider_injected.json`
beside the landing zone so tests know exactly what was injected: lost rows, flipped types,
non-billable rows, referral conversions, conversations of streams our log never saw, and copies of
a conversation sent with several status notifications.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import landing
from billing_jobs.contract import BUSINESS_INITIATED, USER_INITIATED
from billing_jobs.dedupe import deduplicate
from billing_jobs.tables import first_of_runs

SECOND = 10**9
DAY = 24 * 3600 * SECOND
NOISE = {"lost": 0.01, "flipped": 0.005, "not_billable": 0.005, "referral": 0.003}
PROVIDER_ONLY = 0.003  # of the conversations, added on contacts our log never saw
COPIES = 0.2  # conversations WhatsApp reports with more than one status notification
MANIFEST = "provider_injected.json"


def simulate(messages: pa.Table, delays: np.ndarray) -> pa.Table:
    """The conversations WhatsApp opens for deduplicated `messages` (line_id, contact_id,
    conversation_type, opened_at in ns, message_id), stream by stream in time order. A
    conversation that message i opens is opened `delays[i]` seconds after it was sent.

    Vectorised: whether a delivered business message could open a conversation, and of which
    type, depends only on the stream's last inbound message (a running maximum); which of those
    candidates do open depends on the conversation before, so each round opens the first
    candidate of every stream that is past its open conversation (a stream rarely has more than a
    few conversations in a window). `simulate_reference` walks message by message; a test holds
    them equal."""
    keep = pc.invert(pc.equal(messages.column("status"), "failed"))
    m = messages.filter(keep).append_column(
        "delay", pa.array(delays[np.flatnonzero(np.asarray(keep))], pa.int64()))
    keys = ("line_id", "contact_id", "sent_at", "message_id")
    plain = pa.table({c: pc.cast(m.column(c), pa.string()) if c != "sent_at" else m.column(c)
                      for c in keys})
    m = m.take(pc.sort_indices(plain, sort_keys=[(c, "ascending") for c in keys]))
    n = m.num_rows
    if n == 0:
        return _conversations(m, np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64))
    stream = np.asarray(pc.dictionary_encode(pc.binary_join_element_wise(
        pc.cast(m.column("line_id"), pa.string()), pc.cast(m.column("contact_id"), pa.string()),
        "\x1f")).combine_chunks().indices, dtype=np.int64)
    at = np.asarray(pc.cast(m.column("sent_at"), pa.int64()), dtype=np.int64)
    inbound = _is(m, "direction", "inbound")
    delivered = _is(m, "status", "delivered") | _is(m, "status", "read")
    template = _is(m, "message_type", "template")
    first_of_stream = np.ones(n, dtype=bool)
    first_of_stream[1:] = stream[1:] != stream[:-1]
    stream_start = np.maximum.accumulate(np.where(first_of_stream, np.arange(n), 0))
    last_inbound = np.maximum.accumulate(np.where(inbound, np.arange(n), -1))
    in_window = (last_inbound >= stream_start) & (at < at[np.maximum(last_inbound, 0)] + DAY)
    user = ~inbound & delivered & in_window
    business = ~inbound & delivered & ~in_window & template
    cand = np.flatnonzero(user | business)
    c_stream, c_at = stream[cand], at[cand]
    c_opened = c_at + np.asarray(m.column("delay"), dtype=np.int64)[cand] * SECOND
    conv_end = np.full(int(stream.max()) + 1, -1, dtype=np.int64)
    opens = np.zeros(len(cand), dtype=bool)
    alive = np.ones(len(cand), dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        chosen = idx[first_of_runs(c_stream[idx])]  # candidates are ordered by stream
        opens[chosen] = True
        conv_end[c_stream[chosen]] = c_opened[chosen] + DAY
        alive = ~opens & (c_at >= conv_end[c_stream])
    rows = cand[opens]
    kinds = np.where(user[rows], USER_INITIATED, BUSINESS_INITIATED).tolist()
    return _conversations(m, rows, kinds, c_opened[opens])


def _is(table: pa.Table, column: str, value: str) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.equal(pc.cast(table.column(column), pa.string()), value),
                                   False), dtype=bool)


def _conversations(m: pa.Table, rows: np.ndarray, kinds: list[str], opened: np.ndarray
                   ) -> pa.Table:
    take = pa.array(rows, pa.int64())
    return pa.table({
        "line_id": pc.cast(m.column("line_id").take(take), pa.string()),
        "contact_id": pc.cast(m.column("contact_id").take(take), pa.string()),
        "conversation_type": pa.array(kinds, pa.string()),
        "opened_at": pa.array(opened, pa.int64()),
        "message_id": pc.cast(m.column("message_id").take(take), pa.string()),
    })


def simulate_reference(messages: pa.Table, delays: np.ndarray) -> list[dict]:
    """The model message by message, as the module docstring says it (for the tests)."""
    rows = [dict(r, delay=int(d)) for r, d in zip(messages.to_pylist(), delays)
            if r["status"] != "failed"]
    rows.sort(key=lambda r: (r["line_id"], r["contact_id"], r["sent_at"], r["message_id"]))
    out, stream, conv_end, window_end = [], None, -1, -1
    for r in rows:
        key = (r["line_id"], r["contact_id"])
        if key != stream:
            stream, conv_end, window_end = key, -1, -1
        at = r["sent_at"]
        if r["direction"] == "inbound":
            window_end = at + dt.timedelta(days=1)
            continue
        if r["status"] not in ("delivered", "read") or (conv_end != -1 and at < conv_end):
            continue
        if window_end != -1 and at < window_end:  # any business message inside the window
            kind = USER_INITIATED
        elif r["message_type"] == "template":
            kind = BUSINESS_INITIATED
        else:
            continue
        opened = at + dt.timedelta(seconds=r["delay"])
        conv_end = opened + dt.timedelta(days=1)
        out.append({"line_id": key[0], "contact_id": key[1], "conversation_type": kind,
                    "opened_at": opened, "message_id": r["message_id"]})
    return out


def write_provider(out: Path, start: dt.date, days: int, seed: int, line_country: dict,
                   rates: dict, formats: list[str], noise: bool = True) -> dict:
    """Simulate from the landing zone under `out`, inject the noise (unless `noise` is false:
    WhatsApp's side exactly as its model opens it), write the partitions of `days` days from
    `start`; returns (and writes) the manifest of what was injected."""
    rng = np.random.default_rng(seed + 1)
    files = [f for d in range(days)
             for f in landing.partition_files(out, start + dt.timedelta(days=d))]
    deduped = deduplicate(landing.read_files(files).valid).table
    convs = simulate(deduped, rng.integers(1, 10, size=deduped.num_rows))
    del deduped
    n = convs.num_rows
    ids = pa.array([f"conv.{seed}.{k:09d}" for k in range(n)], pa.string())
    user = np.asarray(pc.equal(convs.column("conversation_type"), USER_INITIATED), dtype=bool)
    lines = convs.column("line_id").to_pylist()
    known_cost = rng.random(n) < 0.8
    cost = [(rates[line_country[line]][0] if u else rates[line_country[line]][1]) if k else None
            for line, u, k in zip(lines, user.tolist(), known_cost.tolist())]
    picks = rng.permutation(n)
    injected, noise_of, at = {}, {}, 0
    for name, share in NOISE.items():
        count = int(round(n * share)) if noise else 0
        noise_of[name] = np.zeros(n, dtype=bool)
        noise_of[name][picks[at:at + count]] = True
        injected[name] = sorted(ids.filter(pa.array(noise_of[name])).to_pylist())
        at += count
    ctype = np.where(user, USER_INITIATED, BUSINESS_INITIATED).astype(object)
    ctype[noise_of["flipped"]] = np.where(user, BUSINESS_INITIATED, USER_INITIATED)[
        noise_of["flipped"]]
    ctype[noise_of["referral"]] = "referral_conversion"
    table = pa.table({
        "conversation_id": ids, "line_id": convs.column("line_id"),
        "contact_id": convs.column("contact_id"),
        "conversation_type": pa.array(ctype.tolist(), pa.string()),
        "opened_at": convs.column("opened_at"), "message_id": convs.column("message_id"),
        "billable": pa.array(~noise_of["not_billable"]),
        "cost": pa.array(cost, pa.string()),
        "currency": pa.array(["USD" if k else None for k in known_cost.tolist()], pa.string()),
    }).filter(pa.array(~noise_of["lost"]))
    names = sorted(line_country)
    first = int(dt.datetime.combine(start, dt.time(), dt.timezone.utc).timestamp()) * SECOND
    extra = []
    for k in range(int(round(n * PROVIDER_ONLY)) if noise else 0):
        line = names[int(rng.integers(len(names)))]
        extra.append({"conversation_id": f"conv.{seed}.extra.{k:06d}", "line_id": line,
                      "contact_id": f"+99{int(rng.integers(10**9, 10**10))}",
                      "conversation_type": BUSINESS_INITIATED,
                      "opened_at": first + int(rng.integers(0, days * DAY)),
                      "message_id": None, "billable": True, "cost": None, "currency": None})
    injected["provider_only"] = [c["conversation_id"] for c in extra]
    if extra:
        table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
    copies = rng.permutation(table.num_rows)[:int(table.num_rows * COPIES * noise)]
    table = pa.concat_tables([table, table.take(pa.array(copies, pa.int64()))])
    table = table.take(pa.array(rng.permutation(table.num_rows), pa.int64()))
    _write_partitions(out, table, start, days, formats)
    manifest = {k: v for k, v in injected.items()}
    manifest["copies"] = len(copies)
    manifest["conversations"] = n
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _write_partitions(out: Path, table: pa.Table, start: dt.date, days: int,
                      formats: list[str]) -> None:
    table = table.set_column(table.schema.get_field_index("opened_at"), "opened_at",
                             table.column("opened_at").cast(pa.timestamp("ns", "UTC")))
    dates = pc.cast(pc.cast(table.column("opened_at"), pa.timestamp("ns")), pa.date32())
    for d in range(days):
        day = start + dt.timedelta(days=d)
        part = table.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
        folder = out / "provider_conversations" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "_SUCCESS").touch()
        fmt = formats[d % len(formats)]
        path = folder / f"conversations-{day:%Y%m%d}"
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(part, path.with_suffix(".parquet"))
            continue
        text = part.set_column(part.schema.get_field_index("opened_at"), "opened_at",
                               pc.strftime(part.column("opened_at"), "%Y-%m-%dT%H:%M:%SZ"))
        text = text.set_column(text.schema.get_field_index("billable"), "billable",
                               pc.cast(text.column("billable"), pa.string()))
        if fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(text, path.with_suffix(".csv"))
        else:
            with open(path.with_suffix(".jsonl"), "w") as f:
                for row in text.to_pylist():
                    f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
