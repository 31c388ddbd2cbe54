"""Why each provider difference exists, in the plain words of billing-rules.md ("Provider
reconciliation"), from the message log of D-1..D+1 and WhatsApp's conversations.

The log is scanned by one in-process DuckDB query joined to the differences' streams
(statements/provider_explanations.sql): a 10M-message day has 30M log rows in its window, and
none of them becomes a Python object. Parquet files on a local disk are read by DuckDB itself,
keeping the rows the billing run would keep for what the wording needs (a known direction, message
type and status, an instant with its zone); other formats and remote files go through the landing
reader and its full validation. Streams are matched on the canonical contact, which stays in this
process's memory: DuckDB is told not to spill to disk, so no phone number leaves the landing zone.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from billing_jobs import landing, warehouse
from billing_jobs.contract import BUSINESS_INITIATED, DEFAULT_STATUS, DIRECTIONS, MESSAGE_TYPES, \
    STATUSES
from billing_jobs.pseudonym import contact_key

DIFFS = pa.schema([
    ("idx", pa.int64()), ("kind", pa.string()), ("line_id", pa.string()),
    ("contact", pa.string()), ("contact_key", pa.string()), ("message_id", pa.string()),
    ("conversation_type", pa.string()), ("started_at", pa.timestamp("ns", "UTC")),
    ("opened_at", pa.timestamp("ns", "UTC")),
])
_TEXT = (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary)


def explanations(differences: pa.Table, convs: pa.Table, files: list[Path], secret: str
                 ) -> pa.Array:
    """One explanation per row of `differences` (kind, line_id, contact_key, message_id,
    conversation_type, started_at, provider_conversation_type, opened_at, and `contact`: the
    canonical contact of WhatsApp's side, null for `ours_only`). `convs` are WhatsApp's accepted
    conversations of the window (conversation_id, line_id, contact_key, opened_at)."""
    if differences.num_rows == 0:
        return pa.array([], pa.string())
    import duckdb

    con = duckdb.connect(config={"temp_directory": ""})  # nothing spilled: contacts stay in memory
    try:
        _register_log(con, files)
        diffs = differences.append_column("idx", pa.array(range(differences.num_rows), pa.int64()))
        diffs = diffs.select(DIFFS.names).cast(DIFFS)
        diffs = diffs.set_column(diffs.schema.get_field_index("contact"), "contact",
                                 _our_contacts(con, diffs, secret))
        con.register("diffs", diffs)
        con.register("convs", convs.select(["conversation_id", "line_id", "contact_key",
                                            "opened_at"]))
        sql = (warehouse.STATEMENTS / "provider_explanations.sql").read_text()
        facts = con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()
    rows = differences.select(["kind", "conversation_type", "provider_conversation_type"]
                              ).to_pylist()
    return pa.array([wording(d, f) for d, f in zip(rows, facts)], pa.string())


def _register_log(con, files: list[Path]) -> None:
    """`log`: message_id, line_id, contact (canonical), direction, status, sent_at."""
    direct = [f for f in files if _scannable(f)]
    parts = []
    if direct:
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in direct)
        quoted = ", ".join(f"'{v}'" for v in (*DIRECTIONS,))
        types = ", ".join(f"'{v}'" for v in MESSAGE_TYPES)
        statuses = ", ".join(f"'{v}'" for v in STATUSES)
        parts.append(f"""
            select message_id, line_id, contact, direction, status, sent_at from (
                select
                    message_id::varchar as message_id,
                    line_id::varchar as line_id,
                    case when starts_with(contact_id::varchar, '+') then substr(contact_id::varchar, 2)
                        else contact_id::varchar end as contact,
                    direction::varchar as direction,
                    message_type::varchar as message_type,
                    coalesce(nullif(status::varchar, ''), '{DEFAULT_STATUS}') as status,
                    sent_at
                from read_parquet([{listed}], union_by_name = true)
            )
            where direction in ({quoted}) and message_type in ({types})
                and status in ({statuses}) and sent_at is not null
                and message_id is not null and line_id is not null and contact is not null""")
    others = [f for f in files if f not in direct]
    if others:
        valid = landing.read_files(others).valid
        con.register("log_validated", pa.table({
            "message_id": pc.cast(valid.column("message_id"), pa.string()),
            "line_id": pc.cast(valid.column("line_id"), pa.string()),
            "contact": pc.cast(valid.column("contact_id"), pa.string()),
            "direction": pc.cast(valid.column("direction"), pa.string()),
            "status": pc.cast(valid.column("status"), pa.string()),
            "sent_at": valid.column("sent_at")}))
        parts.append("select * from log_validated")
    if not parts:
        parts.append("select null::varchar as message_id, null::varchar as line_id, null::varchar"
                     " as contact, null::varchar as direction, null::varchar as status,"
                     " null::timestamptz as sent_at where false")
    con.execute("create view log as " + " union all ".join(parts))


def _scannable(path: Path) -> bool:
    """A local parquet file whose columns DuckDB can take as they are: ids and codes as text,
    sent_at an instant with its zone."""
    if path.suffix != ".parquet" or "://" in str(path) or not path.is_file():
        return False
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError):
        return False  # the landing reader names the file and the problem
    names = set(schema.names)
    needed = ("message_id", "line_id", "contact_id", "direction", "message_type", "sent_at")
    if not names.issuperset(needed):
        return False
    text = [c for c in (*needed[:-1], "status") if c in names]
    sent_at = schema.field("sent_at").type
    return all(any(is_(schema.field(c).type) for is_ in _TEXT) for c in text) and \
        pa.types.is_timestamp(sent_at) and sent_at.tz is not None


def _our_contacts(con, diffs: pa.Table, secret: str) -> pa.Array:
    """The canonical contact of every difference: WhatsApp's side carries it; for our starts it
    is the contact of the start's message in the log, kept only if its key is the start's."""
    ours = diffs.filter(pc.equal(diffs.column("kind"), "ours_only"))
    contacts = diffs.column("contact").to_pylist()
    if ours.num_rows == 0:
        return pa.array(contacts, pa.string())
    con.register("wanted", ours.select(["message_id", "line_id"]))
    found = con.sql("select log.message_id, any_value(log.contact) as contact from log "
                    "semi join wanted on wanted.message_id = log.message_id "
                    "and wanted.line_id = log.line_id group by log.message_id").fetchall()
    by_message = dict(found)
    for i, kind, mid, key in zip(range(diffs.num_rows), diffs.column("kind").to_pylist(),
                                 diffs.column("message_id").to_pylist(),
                                 diffs.column("contact_key").to_pylist()):
        if kind == "ours_only":
            contact = by_message.get(mid)
            contacts[i] = contact if contact and contact_key(contact, secret) == key else None
    return pa.array(contacts, pa.string())


def wording(d: dict, f: dict) -> str:
    """The plain words of billing-rules.md's cases, from the facts the query found."""
    if d["kind"] == "type_mismatch":
        return (f"WhatsApp reports a {d['provider_conversation_type']} conversation where the "
                f"rules charged a {d['conversation_type']} start")
    if d["kind"] == "ours_only" and d["conversation_type"] == BUSINESS_INITIATED:
        if f["status_rank"] == 1:
            return ("the template never reached delivered or read (status sent): WhatsApp "
                    "opens a conversation only on delivery")
        if f["holder_id"] is not None:
            return (f"sent while WhatsApp already had conversation {f['holder_id']} of this "
                    f"stream open (opened {f['holder_opened_at']:%Y-%m-%d %H:%M:%S} UTC): the "
                    f"rules charge every template attempt outside a session, WhatsApp one "
                    f"conversation per 24 h")
        return "WhatsApp reported no conversation of this stream around the template"
    if d["kind"] == "ours_only":
        if f["answer_id"] is None:
            return ("the business sent no delivered message in the 24 h after it: WhatsApp "
                    "charges a user-initiated conversation only once the business answers")
        return (f"the business answered ({f['answer_id']} delivered "
                f"{f['answer_sent_at']:%Y-%m-%d %H:%M:%S} UTC) but WhatsApp reported no "
                f"conversation of this stream")
    if not f["near_messages"]:
        return ("our log has no message of this stream within 24 h of the opening: a message "
                "missing from our log")
    if f["inbound_id"] is not None:
        return (f"the contact's session was already open in our log (inbound {f['inbound_id']} at "
                f"{f['inbound_sent_at']:%Y-%m-%d %H:%M:%S} UTC): the rules charge a session once "
                f"however long it runs, WhatsApp a new conversation every 24 h")
    return ("our log has messages of this stream within 24 h of the opening but the rules "
            "charged no start that pairs with it")
