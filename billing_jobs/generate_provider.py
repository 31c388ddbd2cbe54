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

SECOND = 10**9
DAY = 24 * 3600 * SECOND
NOISE = {"lost": 0.01, "flipped": 0.005, "not_billable": 0.005, "referral": 0.003}
PROVIDER_ONLY = 0.003  # of the conversations, added on contacts our log never saw
COPIES = 0.2  # conversations WhatsApp reports with more than one status notification
MANIFEST = "provider_injected.json"


def simulate(messages: pa.Table, rng: np.random.Generator) -> list[dict]:
    """The conversations WhatsApp opens for deduplicated messages, in time order."""
    keep = pc.invert(pc.equal(messages.column("status"), "failed"))
    m = messages.filter(keep)
    cols = {c: m.column(c).to_pylist() if c != "sent_at" else
            pc.cast(m.column("sent_at"), pa.int64()).to_numpy() for c in
            ("message_id", "line_id", "contact_id", "direction", "message_type", "status",
             "sent_at")}
    order = sorted(range(m.num_rows), key=lambda i: (cols["line_id"][i], cols["contact_id"][i],
                                                     cols["sent_at"][i], cols["message_id"][i]))
    out, stream, conv_end, window_end = [], None, -1, -1
    for i in order:
        key = (cols["line_id"][i], cols["contact_id"][i])
        if key != stream:
            stream, conv_end, window_end = key, -1, -1
        at = int(cols["sent_at"][i])
        if cols["direction"][i] == "inbound":
            window_end = at + DAY
            continue
        if cols["status"][i] not in ("delivered", "read") or at < conv_end:
            continue
        if at < window_end:  # any business message answering inside the window
            kind = USER_INITIATED
        elif cols["message_type"][i] == "template":
            kind = BUSINESS_INITIATED
        else:
            continue
        opened = at + int(rng.integers(1, 10)) * SECOND
        conv_end = opened + DAY
        out.append({"line_id": key[0], "contact_id": key[1], "conversation_type": kind,
                    "opened_at": opened, "message_id": cols["message_id"][i]})
    return out


def write_provider(out: Path, start: dt.date, days: int, seed: int, line_country: dict,
                   rates: dict, formats: list[str], noise: bool = True) -> dict:
    """Simulate from the landing zone under `out`, inject the noise (unless `noise` is false:
    WhatsApp's side exactly as its model opens it), write the partitions of `days` days from
    `start`; returns (and writes) the manifest of what was injected."""
    rng = np.random.default_rng(seed + 1)
    files = [f for d in range(days)
             for f in landing.partition_files(out, start + dt.timedelta(days=d))]
    batch = landing.read_files(files)
    deduped = deduplicate(batch.valid).table
    convs = simulate(deduped, rng)
    for k, c in enumerate(convs):
        c["conversation_id"] = f"conv.{seed}.{k:09d}"
        c["billable"] = True
        user, business = rates[line_country[c["line_id"]]]
        known_cost = rng.random() < 0.8
        c["cost"] = (user if c["conversation_type"] == USER_INITIATED else business) \
            if known_cost else None
        c["currency"] = "USD" if known_cost else None
    n = len(convs)
    picks = rng.permutation(n)
    injected, at = {}, 0
    for name, share in NOISE.items():
        count = int(round(n * share)) if noise else 0
        injected[name] = sorted(convs[i]["conversation_id"] for i in picks[at:at + count])
        at += count
    by_id = {c["conversation_id"]: c for c in convs}
    for cid in injected["flipped"]:
        c = by_id[cid]
        c["conversation_type"] = (USER_INITIATED if c["conversation_type"] == BUSINESS_INITIATED
                                  else BUSINESS_INITIATED)
    for cid in injected["not_billable"]:
        by_id[cid]["billable"] = False
    for cid in injected["referral"]:
        by_id[cid]["conversation_type"] = "referral_conversion"
    lost = set(injected["lost"])
    rows = [c for c in convs if c["conversation_id"] not in lost]
    lines = sorted(line_country)
    first = int(dt.datetime.combine(start, dt.time(), dt.timezone.utc).timestamp()) * SECOND
    extra = []
    for k in range(int(round(n * PROVIDER_ONLY)) if noise else 0):
        line = lines[int(rng.integers(len(lines)))]
        extra.append({"conversation_id": f"conv.{seed}.extra.{k:06d}", "line_id": line,
                      "contact_id": f"+99{int(rng.integers(10**9, 10**10))}",
                      "conversation_type": BUSINESS_INITIATED,
                      "opened_at": first + int(rng.integers(0, days * DAY)),
                      "message_id": None, "billable": True, "cost": None, "currency": None})
    injected["provider_only"] = [c["conversation_id"] for c in extra]
    rows += extra
    copies = [rows[i] for i in rng.permutation(len(rows))[:int(len(rows) * COPIES * noise)]]
    rows += copies
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    _write_partitions(out, rows, start, days, formats)
    manifest = {k: v for k, v in injected.items()}
    manifest["copies"] = len(copies)
    manifest["conversations"] = n
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _write_partitions(out: Path, rows: list[dict], start: dt.date, days: int,
                      formats: list[str]) -> None:
    ts = pa.timestamp("ns", "UTC")
    table = pa.table({
        "conversation_id": [r["conversation_id"] for r in rows],
        "line_id": [r["line_id"] for r in rows],
        "contact_id": [r["contact_id"] for r in rows],
        "conversation_type": [r["conversation_type"] for r in rows],
        "opened_at": pa.array([r["opened_at"] for r in rows], pa.int64()).cast(ts),
        "message_id": pa.array([r["message_id"] for r in rows], pa.string()),
        "billable": pa.array([r["billable"] for r in rows], pa.bool_()),
        "cost": pa.array([r["cost"] for r in rows], pa.string()),
        "currency": pa.array([r["currency"] for r in rows], pa.string()),
    })
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
