"""WhatsApp's rows as read (provider_records.py): costs judged like Decimal would judge them, and
copies of one conversation folded or quarantined, on arbitrary inputs."""

from __future__ import annotations

import datetime as dt
import itertools
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


def deduplicate_reference(rows: list[dict]) -> tuple[list[int], list[int], int]:
    """The rule as written: per conversation id, copies that agree on stream, type and opening
    fold into the first read; if any two disagree, every copy is quarantined. Returns the kept
    and the quarantined source rows, and the number of copies folded."""
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        by_id.setdefault(row["conversation_id"], []).append(row)
    kept, conflicting, folded = [], [], 0
    for copies in by_id.values():
        shapes = {(r["line_id"], r["contact_id"], r["conversation_type"], r["opened_at"])
                  for r in copies}
        if len(shapes) > 1:
            conflicting += [r["source_row"] for r in copies]
        else:
            kept.append(copies[0]["source_row"])
            folded += len(copies) - 1
    return sorted(kept), sorted(conflicting), folded


@st.composite
def provider_rows(draw) -> list[dict]:
    at = dt.datetime(2026, 3, 1, 10, tzinfo=dt.timezone.utc)
    return [{"conversation_id": draw(st.sampled_from(["c1", "c2", "c3", "c10", "c4"])),
             "line_id": draw(st.sampled_from(["L1", "L2"])),
             "contact_id": draw(st.sampled_from(["491", "492"])),
             "conversation_type": draw(st.sampled_from(["user_initiated", "business_initiated"])),
             "opened_at": at + dt.timedelta(seconds=draw(st.integers(0, 1))),
             "message_id": draw(st.one_of(st.none(), st.sampled_from(["m1", "m2"]))),
             "billable": True, "cost": None, "currency": None,
             "source_file": draw(st.sampled_from(["a.csv", "b.parquet"])), "source_row": k + 1}
            for k in range(draw(st.integers(0, 30)))]


@settings(max_examples=300, deadline=None)
@given(provider_rows(), st.integers(1, 4))
def test_the_vectorised_folding_equals_the_rule_as_written(rows, pieces):
    # read as several files: a table of several chunks, as the day's partitions make it
    cut = [len(rows) * k // pieces for k in range(pieces + 1)]
    table = pa.concat_tables([pa.Table.from_pylist(rows[a:b], schema=VALID_SCHEMA)
                              for a, b in itertools.pairwise(cut)])
    kept, conflicts, folded = deduplicate(table)
    expected_kept, expected_conflicting, expected_folded = deduplicate_reference(rows)
    assert kept.column("source_row").to_pylist() == expected_kept
    assert conflicts.column("source_row").to_pylist() == expected_conflicting
    assert folded == expected_folded
    assert kept.num_rows + conflicts.num_rows + folded == len(rows)  # nothing lost or doubled
