"""Keyed pseudonyms of contacts (data-contracts.md §3): the warehouse never holds a phone number,
only `contact_key`, an HMAC-SHA256 of the contact id under the configured secret."""

from __future__ import annotations

import hmac
import json

import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.errors import redact


def canonical(contact_id) -> str:
    """The canonical form of a contact id: its digits, without the optional leading `+`
    (billing-rules.md, Contacts); an integer as its digits."""
    text = str(contact_id)
    return text[1:] if text.startswith("+") else text


def contact_key(contact_id: str, secret: str) -> str:
    """HMAC-SHA256 of the canonical contact id."""
    return hmac.digest(secret.encode(), canonical(contact_id).encode(), "sha256").hex()


def contact_keys(contacts: pa.ChunkedArray | pa.Array, secret: str) -> pa.Array:
    """`contact_key` of every contact id, computed once per distinct id."""
    encoded = pc.dictionary_encode(contacts)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    keys = [contact_key(c, secret) for c in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(keys, pa.string()), encoded.indices)


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
