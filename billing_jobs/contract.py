"""The message-log contract (data-contracts.md §1) in one place: column names, allowed values, and
the normalised Arrow schema every reader produces whatever the file format."""

from __future__ import annotations

import pyarrow as pa

REQUIRED_COLUMNS = (
    "message_id",
    "customer_id",
    "line_id",
    "contact_id",
    "direction",
    "message_type",
    "sent_at",
)
CONTRACT_COLUMNS = REQUIRED_COLUMNS + ("status",)

INBOUND = "inbound"
OUTBOUND = "outbound"
DIRECTIONS = (INBOUND, OUTBOUND)

TEMPLATE = "template"
SESSION = "session"  # free-form
MESSAGE_TYPES = (TEMPLATE, SESSION)

# Status precedence for copies of one message: sent < failed < delivered < read (billing-rules.md).
STATUS_RANK = {"sent": 0, "failed": 1, "delivered": 2, "read": 3}
STATUSES = tuple(STATUS_RANK)
DEFAULT_STATUS = "sent"
FAILED = "failed"

# Bumped whenever the rules change what is charged; recorded on every run (billing_runs).
RULES_VERSION = "billing-rules/2026-11-25"

USER_INITIATED = "user_initiated"
BUSINESS_INITIATED = "business_initiated"
CONVERSATION_TYPES = (USER_INITIATED, BUSINESS_INITIATED)

OUTSIDE_SESSION = "outside_session"

# Timestamps are normalised to UTC nanoseconds: no reader may lose precision that orders messages.
TIMESTAMP = pa.timestamp("ns", tz="UTC")

# Columns with few distinct values are dictionary-encoded: a 10M-row day then costs ~60 bytes a row
# in memory, and the engine gets integer codes for lines and contacts without hashing strings.
# Files are read with these few-valued columns as dictionaries; contact_id (about one distinct value
# per ten rows) is read as plain text and encoded once per day, which is cheaper than unifying
# per-file dictionaries.
DICT = pa.dictionary(pa.int32(), pa.string())
DICTIONARY_COLUMNS = ("customer_id", "line_id", "direction", "message_type", "status")

MESSAGES_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("customer_id", DICT),
        ("line_id", DICT),
        ("contact_id", DICT),
        ("direction", DICT),
        ("message_type", DICT),
        ("sent_at", TIMESTAMP),
        ("status", DICT),
    ]
)

STARTS_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("customer_id", pa.string()),
        ("line_id", pa.string()),
        ("contact_id", pa.string()),
        ("conversation_type", pa.string()),
        ("started_at", TIMESTAMP),
    ]
)

ANOMALIES_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("customer_id", pa.string()),
        ("line_id", pa.string()),
        ("contact_id", pa.string()),
        ("sent_at", TIMESTAMP),
        ("kind", pa.string()),
    ]
)

# Where a row came from, carried beside the contract columns so a quarantine names file and row.
SOURCE_COLUMNS = (("source_file", DICT), ("source_row", pa.int64()))
