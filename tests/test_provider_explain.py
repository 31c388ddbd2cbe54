"""Every explanation case of billing-rules.md ("Provider reconciliation"), worded from a small
message log, and the same words whichever way the log is read: parquet scanned by DuckDB, or CSV
and JSONL through the landing reader's validation."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from billing_jobs.provider_explain import _scannable, explanations, unreported_contacts
from billing_jobs.pseudonym import contact_key

SECRET = "test-secret"
DAY = dt.date(2026, 3, 2)
UI, BI = "user_initiated", "business_initiated"
CONTACTS = {name: f"+49151000000{k:02d}" for k, name in enumerate("abcdefgh")}


def at(hour: float) -> dt.datetime:
    return dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc) + dt.timedelta(hours=hour)


def message(mid, who, direction, mtype, hour, status):
    return {"message_id": mid, "customer_id": "C1", "line_id": "L1",
            "contact_id": CONTACTS[who], "direction": direction, "message_type": mtype,
            "sent_at": at(hour), "status": status}


LOG = [
    message("t-sent", "a", "outbound", "template", 10, "sent"),
    message("t-held", "b", "outbound", "template", 12, "delivered"),
    message("t-alone", "c", "outbound", "template", 15, "read"),
    message("in-unanswered", "d", "inbound", "session", 8, "read"),
    message("in-answered", "e", "inbound", "session", 8, "read"),
    message("answer", "e", "outbound", "session", 8.5, "delivered"),
    message("earlier", "g", "inbound", "session", 7, "read"),
    message("outbound-only", "h", "outbound", "session", 9, "delivered"),
    message("bad-direction", "f", "sideways", "session", 9, "read"),  # quarantined by a run
]


def difference(kind, who, *, mid=None, ctype=None, hour=None, cid=None, ptype=None, opened=None):
    canonical = CONTACTS[who].lstrip("+")
    return {"kind": kind, "line_id": "L1", "contact_key": contact_key(canonical, SECRET),
            "contact": None if kind == "ours_only" else canonical, "message_id": mid,
            "conversation_type": ctype, "started_at": None if hour is None else at(hour),
            "conversation_id": cid, "provider_conversation_type": ptype,
            "opened_at": None if opened is None else at(opened)}


CASES = [
    (difference("ours_only", "a", mid="t-sent", ctype=BI, hour=10),
     "the template never reached delivered or read (status sent)"),
    (difference("ours_only", "b", mid="t-held", ctype=BI, hour=12),
     "sent while WhatsApp already had conversation wa-open of this stream open (opened "
     "2026-03-02 09:00:00 UTC)"),
    (difference("ours_only", "c", mid="t-alone", ctype=BI, hour=15),
     "WhatsApp reported no conversation of this stream around the template"),
    (difference("ours_only", "d", mid="in-unanswered", ctype=UI, hour=8),
     "the business sent no delivered message in the 24 h after it"),
    (difference("ours_only", "e", mid="in-answered", ctype=UI, hour=8),
     "the business answered (answer delivered 2026-03-02 08:30:00 UTC)"),
    (difference("provider_only", "f", cid="wa-f", ptype=UI, opened=9),
     "our log has no message of this stream within 24 h of the opening"),
    (difference("provider_only", "g", cid="wa-g", ptype=UI, opened=10),
     "the contact's session was already open in our log (inbound earlier at "
     "2026-03-02 07:00:00 UTC)"),
    (difference("provider_only", "h", cid="wa-h", ptype=BI, opened=9),
     "our log has messages of this stream within 24 h of the opening but the rules charged no"),
    (difference("type_mismatch", "a", mid="t-sent", ctype=BI, hour=10, cid="wa-x", ptype=UI,
                opened=10),
     "WhatsApp reports a user_initiated conversation where the rules charged a "
     "business_initiated start"),
]


def write_log(folder, fmt: str) -> list:
    part = folder / f"date={DAY}"
    part.mkdir(parents=True)
    table = pa.Table.from_pylist(LOG)
    path = part / f"part-0.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pcsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps({**r, "sent_at": r["sent_at"].isoformat()}) + "\n"
                                for r in LOG))
    return [path]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_each_case_of_the_spec_is_explained_from_the_log(tmp_path, fmt):
    files = write_log(tmp_path, fmt)
    assert _scannable(files[0]) == (fmt == "parquet")  # DuckDB's scan, else the landing reader
    diffs = pa.Table.from_pylist([d for d, _ in CASES])
    convs = pa.Table.from_pylist([{  # b's contact comes from here, the others' from the log
        "conversation_id": "wa-open", "line_id": "L1", "contact_id": CONTACTS["b"].lstrip("+"),
        "contact_key": contact_key(CONTACTS["b"].lstrip("+"), SECRET), "opened_at": at(9)}])
    words = explanations(diffs, convs, files, SECRET).to_pylist()
    for (d, expected), said in zip(CASES, words):
        assert said.startswith(expected), (d["message_id"] or d["conversation_id"], said)
    assert not any("+49" in w or "4915100" in w for w in words)


def test_a_start_whose_message_belongs_to_another_contact_is_not_explained_by_its_stream(
        tmp_path):
    """The start's contact is looked up by its message id and kept only if its key is the
    start's own: a message id reused by another contact lends nothing."""
    files = write_log(tmp_path, "parquet")
    wrong = {**difference("ours_only", "d", mid="in-answered", ctype=UI, hour=8)}
    words = explanations(pa.Table.from_pylist([wrong]), pa.Table.from_pylist([{
        "conversation_id": "x", "line_id": "L1", "contact_id": "491510000099",
        "contact_key": "k", "opened_at": at(0)}]),
        files, SECRET).to_pylist()
    assert words[0].startswith("the business sent no delivered message")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_contacts_of_unreported_streams_are_looked_up_before_the_pairing(tmp_path, fmt):
    """Starts whose stream WhatsApp reported nothing of get their contact from the log (canonical,
    without its +); a reported stream's start is left to WhatsApp's contact; and the explanations
    given those contacts are the ones found without them."""
    files = write_log(tmp_path, fmt)
    ours = [d for d, _ in CASES if d["kind"] == "ours_only"]
    starts = pa.Table.from_pylist([{k: d[k] for k in ("message_id", "line_id", "contact_key",
                                                      "started_at")} for d in ours])
    convs = pa.Table.from_pylist([{
        "conversation_id": "wa-open", "line_id": "L1", "contact_id": CONTACTS["b"].lstrip("+"),
        "contact_key": contact_key(CONTACTS["b"].lstrip("+"), SECRET), "opened_at": at(9)}])
    logged = unreported_contacts(starts, convs, files)
    assert logged == {"t-sent": CONTACTS["a"][1:], "t-alone": CONTACTS["c"][1:],
                      "in-unanswered": CONTACTS["d"][1:], "in-answered": CONTACTS["e"][1:]}
    diffs = pa.Table.from_pylist([d for d, _ in CASES])
    assert explanations(diffs, convs, files, SECRET, logged).to_pylist() == \
        explanations(diffs, convs, files, SECRET).to_pylist()


def test_a_contact_looked_up_before_the_pairing_is_used(tmp_path):
    """A start's message that the log no longer shows is still explained by its stream when its
    contact was looked up earlier: the explanations take `logged` instead of scanning again."""
    part = tmp_path / f"date={DAY}"
    part.mkdir()
    pq.write_table(pa.Table.from_pylist([m for m in LOG if m["message_id"] != "in-answered"]),
                   part / "part-0.parquet")
    start = difference("ours_only", "e", mid="in-answered", ctype=UI, hour=8)
    diffs, convs = pa.Table.from_pylist([start]), pa.Table.from_pylist([{
        "conversation_id": "x", "line_id": "L1", "contact_id": "491510000099",
        "contact_key": "k", "opened_at": at(0)}])
    files = [part / "part-0.parquet"]
    assert explanations(diffs, convs, files, SECRET).to_pylist()[0].startswith(
        "the business sent no delivered message")
    assert explanations(diffs, convs, files, SECRET, {"in-answered": CONTACTS["e"][1:]}
                        ).to_pylist()[0].startswith("the business answered (answer delivered")
