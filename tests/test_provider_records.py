"""WhatsApp's rows as read (provider_records.py): costs judged like Decimal would judge them, and
copies of one conversation folded or quarantined, on arbitrary inputs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_jobs.provider_records import VALID_SCHEMA, _cost, _costs, deduplicate


def test_costs_in_every_spelling():
    texts = ["0.0123", " 0.5 ", "1e-3", "+0.5", "00000000000012.5", "9999999999.9999999999",
             "-1", "NaN", "Infinity", "1e10", "0.00000000001", "abc", "", "   ", None]
    values, bad = _costs(pa.chunked_array([pa.array(texts, pa.string())]))
    assert values.to_pylist() == [
        Decimal("0.0123"), Decimal("0.5"), Decimal("0.001"), Decimal("0.5"), Decimal("12.5"),
        Decimal("9999999999.9999999999"), None, None, None, None, None, None, None, None, None]
    assert bad.tolist() == [False] * 6 + [True] * 6 + [False] * 3


cost_texts = st.one_of(
    st.none(),
    st.decimals(allow_nan=True, allow_infinity=True, places=None).map(str),
    st.from_regex(r"\A\s?[+-]?[0-9]{0,13}(\.[0-9]{0,12})?(e-?[0-9])?\s?\Z"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(cost_texts, max_size=20))
def test_the_vectorised_costs_equal_the_value_by_value_judgement(texts):
    values, bad = _costs(pa.chunked_array([pa.array(texts, pa.string())], pa.string()))
    expected = [(None, False) if t is None or not t.strip() else _cost(t.strip()) for t in texts]
    assert values.to_pylist() == [v for v, _ in expected]
    assert bad.tolist() == [b for _, b in expected]


def test_copies_that_agree_fold_and_copies_that_disagree_are_all_quarantined():
    at = dt.datetime(2026, 3, 1, 10, tzinfo=dt.timezone.utc)
    rows = [("c1", "L1", "491", at, "m1"), ("c2", "L1", "492", at, None),
            ("c1", "L1", "491", at, "m9"), ("c2", "L1", "492", at + dt.timedelta(seconds=1), None),
            ("c3", "L2", "493", at, None)]
    table = pa.Table.from_pylist([
        {"conversation_id": c, "line_id": line, "contact_id": contact,
         "conversation_type": "user_initiated", "opened_at": when, "message_id": mid,
         "billable": True, "cost": None, "currency": None, "source_file": "f.csv",
         "source_row": k + 1}
        for k, (c, line, contact, when, mid) in enumerate(rows)], schema=VALID_SCHEMA)
    kept, conflicts, folded = deduplicate(table)
    assert kept.column("conversation_id").to_pylist() == ["c1", "c3"]
    assert kept.column("message_id").to_pylist() == ["m1", None]  # the first read keeps its id
    assert conflicts.column("source_row").to_pylist() == [2, 4]
    assert set(conflicts.column("reason").to_pylist()) == {"conflicting_duplicate"}
    assert folded == 1
