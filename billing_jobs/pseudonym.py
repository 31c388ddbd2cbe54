"""Keyed pseudonyms of contacts (data-contracts.md §3): the warehouse never holds a phone number,
only `contact_key`, an HMAC-SHA256 of the contact id under the configured secret."""

from __future__ import annotations

import hashlib
import hmac
import json

import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.errors import redact
from billing_jobs.tables import in_memory_duckdb


def canonical(contact_id) -> str:
    """The canonical form of a contact id: its digits, without the optional leading `+`
    (billing-rules.md, Contacts); an integer as its digits."""
    text = str(contact_id)
    return text[1:] if text.startswith("+") else text


def contact_key(contact_id: str, secret: str) -> str:
    """HMAC-SHA256 of the canonical contact id."""
    return hmac.digest(secret.encode(), canonical(contact_id).encode(), "sha256").hex()


def contact_keys(contacts: pa.ChunkedArray | pa.Array, secret: str) -> pa.Array:
    """`contact_key` of every contact id, computed once per distinct id, all at once: the HMAC
    is written out as the two SHA-256 it is (RFC 2104) and run by an in-process DuckDB query,
    several times faster than hmac per id for the 800k distinct contacts of a 10M-message day.
    `contact_key` is the definition; a test holds the two equal."""
    encoded = pc.dictionary_encode(contacts)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    distinct = pc.cast(encoded.dictionary, pa.string())
    if len(distinct) == 0:
        return pa.array([None] * len(encoded), pa.string())
    canonical_ids = pc.if_else(pc.starts_with(distinct, "+"),
                               pc.utf8_slice_codeunits(distinct, 1), distinct)
    key = secret.encode()
    key = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    with in_memory_duckdb() as con:
        con.register("ids", pa.table({"id": canonical_ids}))
        keys = con.sql("select sha256($outer::blob || unhex(sha256($inner::blob || encode(id))))"
                       " from ids", params={"inner": bytes(b ^ 0x36 for b in key),
                                            "outer": bytes(b ^ 0x5C for b in key)}
                       ).to_arrow_table().column(0)
    return pc.take(keys.combine_chunks(), encoded.indices)


def pseudonymised_records(records: pa.ChunkedArray, secret: str) -> pa.Array:
    """Quarantined rows as JSON, with `contact_id` replaced by its `contact_key`, and a phone
    number found in any other column (a producer that swapped columns) replaced by `<number>`:
    the record keeps everything needed to see what was wrong, but no phone number reaches the
    warehouse."""
    out = []
    for text in records.to_pylist():
        row = json.loads(text)
        if row.get("contact_id") is not None:
            row["contact_key"] = contact_key(row.pop("contact_id"), secret)
        row = {k: _scrubbed(v) if k != "contact_key" else v for k, v in row.items()}
        out.append(json.dumps(row, sort_keys=True, default=str))
    return pa.array(out, pa.string())


def _scrubbed(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int) and not isinstance(value, bool) and 7 <= len(str(abs(value))) <= 15:
        return "<number>"
    return value
