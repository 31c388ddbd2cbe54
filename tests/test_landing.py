"""Reading the landing zone: one schema from three formats, UTC everywhere, and every contract
break quarantined with its reason, file and row."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_jobs import landing

GOOD = {
    "message_id": "m1", "customer_id": "C1", "line_id": "L1", "contact_id": "+4915112345",
    "direction": "inbound", "message_type": "session", "sent_at": "2026-03-01T12:00:00Z",
    "status": "read",
}
UTC = dt.timezone.utc


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_three_formats_give_one_schema_and_the_same_rows(tmp_path):
    rows = [GOOD, {**GOOD, "message_id": "m2", "sent_at": "2026-03-01T14:30:00+02:00"}]
    parquet = tmp_path / "a.parquet"
    table = pa.Table.from_pylist([{**r, "sent_at": dt.datetime.fromisoformat(r["sent_at"])}
                                  for r in rows])
    pq.write_table(table, parquet)
    batches = [landing.read_files([p]) for p in
               (parquet, write_csv(tmp_path / "b.csv", rows), write_jsonl(tmp_path / "c.jsonl", rows))]
    for b in batches:
        assert b.quarantined.num_rows == 0
        assert b.valid.drop_columns(["source_file"]) == batches[0].valid.drop_columns(["source_file"])
    assert batches[0].valid.column("sent_at").to_pylist() == [
        dt.datetime(2026, 3, 1, 12, tzinfo=UTC), dt.datetime(2026, 3, 1, 12, 30, tzinfo=UTC)]


def test_offsets_convert_to_utc_with_sub_second_precision(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl",
                       [{**GOOD, "sent_at": "2026-03-01T23:30:00.123456789-05:30"}])
    valid = landing.read_files([path]).valid
    ns = pa.compute.cast(valid.column("sent_at"), pa.int64())[0].as_py()
    assert ns % 10**9 == 123456789
    assert ns // 10**9 == int(dt.datetime(2026, 3, 2, 5, tzinfo=UTC).timestamp())


def test_missing_status_means_sent(tmp_path):
    row = {k: v for k, v in GOOD.items() if k != "status"}
    valid = landing.read_files([write_jsonl(tmp_path / "x.jsonl", [row])]).valid
    assert valid.column("status").to_pylist() == ["sent"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"message_id": ""}, "missing_message_id"),
        ({"customer_id": None}, "missing_customer_id"),
        ({"contact_id": ""}, "missing_contact_id"),
        ({"sent_at": None}, "missing_sent_at"),
        ({"direction": "sideways"}, "invalid_direction"),
        ({"message_type": "sticker"}, "invalid_message_type"),
        ({"message_type": "template"}, "inbound_template"),
        ({"status": "seen"}, "invalid_status"),
        ({"contact_id": "49 151 12345"}, "invalid_contact_id"),
        ({"sent_at": "yesterday"}, "invalid_sent_at"),
        ({"sent_at": "2026-03-01T12:00:00"}, "invalid_sent_at"),  # no offset: not guessed
        ({"sent_at": "2026-13-01T12:00:00Z"}, "invalid_sent_at"),
        ({"sent_at": "2026-03-02T00:00:00Z"}, "sent_at_outside_partition"),
        ({"line_id": "L9"}, "unknown_line"),
        ({"customer_id": "C2"}, "line_of_other_customer"),
    ],
)
def test_contract_breaks_are_quarantined_with_a_reason(tmp_path, change, reason):
    part = tmp_path / "messages" / "date=2026-03-01"
    part.mkdir(parents=True)
    path = write_jsonl(part / "x.jsonl", [GOOD, {**GOOD, "message_id": "bad", **change}])
    batch = landing.read_files([path], lines={"L1": "C1"})
    assert batch.valid.column("message_id").to_pylist() == ["m1"]
    q = batch.quarantined.to_pylist()
    assert [(r["reason"], r["source_row"], r["source_file"]) for r in q] == [(reason, 2, str(path))]
    assert json.loads(q[0]["record"])["direction"] == change.get("direction", "inbound")


def test_naive_parquet_timestamps_are_quarantined_not_guessed(tmp_path):
    path = tmp_path / "naive.parquet"
    pq.write_table(pa.Table.from_pylist([{**GOOD, "sent_at": dt.datetime(2026, 3, 1, 12)}]), path)
    batch = landing.read_files([path])
    assert batch.quarantined.column("reason").to_pylist() == ["invalid_sent_at"]


def test_a_file_without_a_required_column_quarantines_every_row(tmp_path):
    row = {k: v for k, v in GOOD.items() if k != "line_id"}
    batch = landing.read_files([write_csv(tmp_path / "x.csv", [row, {**row, "message_id": "m2"}])])
    assert batch.quarantined.column("reason").to_pylist() == ["missing_line_id"] * 2


def test_an_unreadable_file_fails_naming_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(landing.LandingError, match="broken.parquet"):
        landing.read_files([path])


@pytest.mark.parametrize("name,content", [("broken.jsonl", b'{"message_id": "m1", '),
                                          ("broken.csv", b'a,b\n1,2,3,4\n')])
def test_a_line_that_is_no_row_is_quarantined_not_fatal(tmp_path, name, content):
    """A truncated JSONL line or a CSV row with too many cells is one bad row: the file and the
    day go on (a row never stops a day)."""
    path = tmp_path / name
    path.write_bytes(content)
    batch = landing.read_files([path])
    assert batch.rows_read == 1 and batch.valid.num_rows == 0
    assert batch.quarantined.column("reason").to_pylist() == ["malformed_row"]
    assert batch.quarantined.column("source_row").to_pylist() == [1]


def test_partition_files_of_a_missing_day_are_none(tmp_path):
    assert landing.partition_files(tmp_path, dt.date(2026, 3, 1)) == []


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_parquet_instants_no_backend_holds_are_invalid_others_kept_exactly(tmp_path, unit):
    """Typed instants outside 1677..2262 (year 9999, year 1) are quarantined; a file holding
    none of them is converted in one pass, to the same instants."""
    part = tmp_path / "messages" / "date=2026-03-01"
    part.mkdir(parents=True)
    ok = dt.datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)
    times = {"m1": ok, "far": dt.datetime(9999, 3, 1, tzinfo=UTC),
             "early": dt.datetime(1, 3, 1, tzinfo=UTC), "none": None}
    kind = pa.timestamp(unit, "UTC")
    for name, chosen in (("mixed", times), ("usual", {"m1": ok})):
        pq.write_table(pa.table({
            **{c: [GOOD[c]] * len(chosen) for c in GOOD if c not in ("message_id", "sent_at")},
            "message_id": list(chosen), "sent_at": pa.array(list(chosen.values()), kind)}),
            part / f"{name}.parquet")
        batch = landing.read_files([part / f"{name}.parquet"])
        assert batch.valid.column("sent_at").to_pylist() == [ok]
        assert sorted(zip(batch.quarantined.column("message_id").to_pylist(),
                          batch.quarantined.column("reason").to_pylist())) == sorted(
            [("early", "invalid_sent_at"), ("far", "invalid_sent_at"),
             ("none", "missing_sent_at")] if name == "mixed" else [])


@pytest.mark.parametrize("control", ["\x01", "\x7f"])
def test_a_control_character_deep_in_a_large_file_is_still_found(tmp_path, control):
    """The ids' bytes are scanned a block at a time: the last of many ids still counts."""
    n = 3 * landing._SCAN_BLOCK // 30 + 7  # ids of ~30 bytes: more than three blocks of text
    ids = [f"message-{k:022d}" for k in range(n)]
    ids[-1] = ids[-1][:-1] + control
    table = pa.table({**{c: [v] * n for c, v in GOOD.items() if c != "sent_at"},
                      "message_id": ids,
                      "sent_at": pa.array([dt.datetime(2026, 3, 1, 12, tzinfo=UTC)] * n,
                                          pa.timestamp("ms", tz="UTC"))})
    path = tmp_path / "many.parquet"
    pq.write_table(table, path)
    batch = landing.read_files([path])
    assert batch.quarantined.column("reason").to_pylist() == ["invalid_message_id"]
    assert batch.quarantined.column("source_row").to_pylist() == [n]
    assert batch.valid.num_rows == n - 1


@pytest.mark.parametrize("ids", [["+1", "1", "+2", "3"], ["1", "+2", "3", "+1"], ["+1", "+2"],
                                 ["1", "2"], ["+12", "1", "+21", "2"]])
def test_one_contact_spelled_with_and_without_plus_is_one_code(ids):
    encoded = landing.canonical_contacts(pa.chunked_array([pc.dictionary_encode(pa.array(ids))]))
    assert encoded.to_pylist() == [i.lstrip("+") for i in ids]
    codes = encoded.chunks[0].indices.to_pylist()
    assert len(set(codes)) == len({i.lstrip("+") for i in ids})  # one code per number


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "", None, "inbound"]), max_size=6), max_size=4),
       st.booleans(), st.booleans())
def test_failing_rows_are_those_the_mask_flags(chunks, encoded, null_as):
    """`_failing` (positions, cut short when a chunk passes whole) names exactly the rows that
    `_check`'s mask fails, across chunks, nulls and dictionaries holding values no row uses."""
    arrays = [pa.array(c, pa.string()) for c in chunks]
    if encoded:  # each chunk its own dictionary, with a value no row of it uses
        arrays = [pc.dictionary_encode(pa.concat_arrays([a, pa.array(["unused"])])).slice(0, len(a))
                  for a in arrays]
    col = pa.chunked_array(arrays, arrays[0].type if arrays else pa.string())
    for test in (landing._is_given, landing._is_in(("a", "inbound")), landing._is_message_id):
        expected = np.flatnonzero(~landing._check(col, test, null_as))
        assert landing._failing(col, test, null_as).tolist() == expected.tolist()
