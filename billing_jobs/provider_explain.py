"""Why each provider difference exists, in the plain words of billing-rules.md ("Provider
reconciliation"), from the message log of D-1..D+1 and WhatsApp's conversations.

The log is scanned by one in-process DuckDB query joined to the differences' streams, which also
words each case (statements/provider_explanations.sql): a 10M-message day has 30M log rows in its
window and 360k differences, and none of them becomes a Python object. Parquet files on a local
disk are read by DuckDB itself, keeping the rows the billing run would keep for what the wording
needs (a known direction, message type and status, an instant with its zone); other formats and
remote files go through the landing reader and its full validation. Streams are matched on the
contact (either spelling the log may write: with or without its +), which stays in this
process's memory: DuckDB is told not to spill to disk, so no phone number leaves the landing
zone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from billing_jobs import landing, warehouse
from billing_jobs.contract import DEFAULT_STATUS, DIRECTIONS, MESSAGE_TYPES, STATUSES
from billing_jobs.pseudonym import contact_key
from billing_jobs.tables import in_memory_duckdb

DIFFS = pa.schema([
    ("idx", pa.int64()), ("kind", pa.string()), ("line_id", pa.string()),
    ("contact", pa.string()), ("contact_key", pa.string()), ("message_id", pa.string()),
    ("conversation_type", pa.string()), ("started_at", pa.timestamp("ns", "UTC")),
    ("provider_conversation_type", pa.string()), ("opened_at", pa.timestamp("ns", "UTC")),
])
_TEXT = (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary)


def explanations(differences: pa.Table, convs: pa.Table, files: list[Path], secret: str,
                 logged: dict[str, str] | None = None) -> pa.Array:
    """One explanation per row of `differences` (kind, line_id, contact_key, message_id,
    conversation_type, started_at, provider_conversation_type, opened_at, and `contact`: the
    canonical contact of WhatsApp's side, null for `ours_only`). `convs` are WhatsApp's accepted
    conversations of the window (conversation_id, line_id, contact_key, contact_id, opened_at).
    `logged`: contacts of start messages already looked up in the log (`unreported_contacts`)."""
    if differences.num_rows == 0:
        return pa.array([], pa.string())
    with in_memory_duckdb() as con:
        _register_log(con, files)
        diffs = differences.append_column("idx", pa.array(np.arange(differences.num_rows)))
        diffs = diffs.select(DIFFS.names).cast(DIFFS)
        diffs = diffs.set_column(diffs.schema.get_field_index("contact"), "contact",
                                 _our_contacts(con, diffs, convs, secret, logged or {}))
        con.register("diffs", diffs)
        con.register("convs", convs.select(["conversation_id", "line_id", "contact_key",
                                            "opened_at"]))
        sql = (warehouse.STATEMENTS / "provider_explanations.sql").read_text()
        return con.sql(sql).to_arrow_table().column("explanation").combine_chunks()


def _register_log(con, files: list[Path]) -> None:
    """`log`: message_id, line_id, contact (canonical), contact_id (as written), direction,
    status, sent_at."""
    direct = [f for f in files if _scannable(f)]
    parts = []
    if direct:
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in direct)
        directions = ", ".join(f"'{v}'" for v in DIRECTIONS)
        types = ", ".join(f"'{v}'" for v in MESSAGE_TYPES)
        statuses = ", ".join(f"'{v}'" for v in STATUSES)
        parts.append(f"""
            select message_id, line_id, contact, contact_id, direction, status, sent_at from (
                select
                    message_id::varchar as message_id,
                    line_id::varchar as line_id,
                    case when starts_with(contact_id::varchar, '+')
                        then substr(contact_id::varchar, 2) else contact_id::varchar end
                        as contact,
                    contact_id::varchar as contact_id,
                    direction::varchar as direction,
                    message_type::varchar as message_type,
                    coalesce(nullif(status::varchar, ''), '{DEFAULT_STATUS}') as status,
                    sent_at
                from read_parquet([{listed}], union_by_name = true)
            )
            where direction in ({directions}) and message_type in ({types})
                and status in ({statuses}) and sent_at is not null
                and message_id is not null and line_id is not null and contact is not null""")
    others = [f for f in files if f not in direct]
    if others:
        valid = landing.read_files(others).valid
        con.register("log_validated", pa.table({
            "message_id": pc.cast(valid.column("message_id"), pa.string()),
            "line_id": pc.cast(valid.column("line_id"), pa.string()),
            "contact": pc.cast(valid.column("contact_id"), pa.string()),
            "contact_id": pc.cast(valid.column("contact_id"), pa.string()),  # canonical already
            "direction": pc.cast(valid.column("direction"), pa.string()),
            "status": pc.cast(valid.column("status"), pa.string()),
            "sent_at": valid.column("sent_at")}))
        parts.append("select * from log_validated")
    if not parts:
        parts.append("select null::varchar as message_id, null::varchar as line_id, null::varchar"
                     " as contact, null::varchar as contact_id, null::varchar as direction,"
                     " null::varchar as status,"
                     " null::timestamptz as sent_at where false")
    con.execute("create temp view log as " + " union all ".join(parts))  # this connection's


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


def unreported_contacts(starts: pa.Table, convs: pa.Table, files: list[Path]) -> dict[str, str]:
    """The logged contact of each start whose stream (line, contact key) WhatsApp reported no
    conversation of in the window: such a start can only be `ours_only`, and its explanation
    needs the contact that only the log has. Known before the pairing, so the reconciliation
    looks them up while it pairs. `starts`: message_id, line_id, contact_key, started_at."""
    with in_memory_duckdb() as con:
        _register_log(con, files)
        con.register("starts", starts.select(["message_id", "line_id", "contact_key",
                                              "started_at"]))
        con.register("reported", convs.select(["line_id", "contact_key"]))
        unreported = con.sql("select * from starts anti join reported using (line_id,"
                             " contact_key)").to_arrow_table()
        return _logged_contacts(con, unreported)


def _our_contacts(con, diffs: pa.Table, convs: pa.Table, secret: str, logged: dict[str, str]
                  ) -> pa.Array:
    """The canonical contact of every difference. WhatsApp's side carries it. For our starts it
    is the contact WhatsApp reported for the same line and key, if it reported that stream in
    the window; otherwise the contact of the start's message in the log (`logged`, or one scan
    for those it lacks), kept only if its key is the start's."""
    con.register("diffs_unresolved", diffs.select(["idx", "kind", "line_id", "contact_key",
                                                   "message_id", "contact"]))
    con.register("reported", convs.select(["line_id", "contact_key", "contact_id"]))
    resolved = con.sql("""
        with
        ours as (
            select distinct line_id, contact_key from diffs_unresolved where kind = 'ours_only'
        ),
        r as (
            -- only the streams of our starts are grouped, not all of WhatsApp's
            select line_id, contact_key, any_value(contact_id) as contact_id
            from reported semi join ours using (line_id, contact_key)
            group by line_id, contact_key
        )
        select coalesce(d.contact, r.contact_id) as contact
        from diffs_unresolved as d
        left join r
            on d.kind = 'ours_only' and r.line_id = d.line_id and r.contact_key = d.contact_key
        order by d.idx""").to_arrow_table().column(0).to_pylist()
    wanted = [i for i, (kind, contact) in enumerate(zip(diffs.column("kind").to_pylist(),
                                                        resolved))
              if kind == "ours_only" and contact is None]
    if not wanted:
        return pa.array(resolved, pa.string())
    look = diffs.take(pa.array(wanted, pa.int64())).select(["message_id", "line_id",
                                                            "contact_key", "started_at"])
    missing = pc.invert(pc.is_in(look.column("message_id"),
                                 value_set=pa.array(list(logged), pa.string())))
    by_message = {**logged, **_logged_contacts(con, look.filter(missing))}
    for i, mid, key in zip(wanted, look.column("message_id").to_pylist(),
                           look.column("contact_key").to_pylist()):
        contact = by_message.get(mid)
        resolved[i] = contact if contact and contact_key(contact, secret) == key else None
    return pa.array(resolved, pa.string())


def _logged_contacts(con, starts: pa.Table) -> dict[str, str]:
    """message_id -> the contact its row in `log` names, for `starts` (message_id, line_id,
    started_at): one scan of the log."""
    if starts.num_rows == 0:
        return {}
    con.register("wanted", starts.select(["message_id", "line_id"]))
    # a start's message was sent at its start: the bounds let DuckDB skip the other days' files
    first, last = pc.min_max(starts.column("started_at")).values()
    return dict(con.sql(
        "select log.message_id, any_value(log.contact) as contact from log "
        "semi join wanted on wanted.message_id = log.message_id "
        "and wanted.line_id = log.line_id "
        "where log.sent_at between $first - interval 1 second and $last + interval 1 second "
        "group by log.message_id",
        params={"first": first.as_py(), "last": last.as_py()}).fetchall())
