"""The array helpers of tables.py equal what they replace, on arbitrary inputs."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from billing_jobs.tables import constant


@given(st.one_of(st.none(), st.text()), st.integers(0, 50))
def test_a_constant_text_column_equals_the_one_built_from_a_list(value, n):
    made = constant(value, n, pa.string())
    made.validate(full=True)
    assert made.equals(pa.array([value] * n, pa.string()))


def test_constants_of_other_types():
    assert constant(dt.date(2026, 3, 1), 2, pa.date32()).to_pylist() == [dt.date(2026, 3, 1)] * 2
    assert constant(7, 0, pa.int64()).to_pylist() == []


# hashes drawn from few values, and values sharing their low bits with others (the filter's
# table index), so that repeats, near-misses and collisions of the filter all occur
_HASHES = st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1),
                             st.integers(0, 40).map(lambda k: k + (1 << 22) * 3),
                             st.integers(0, 40).map(lambda k: k + (1 << 40))), max_size=300)


@given(_HASHES)
def test_maybe_repeated_marks_exactly_the_hashes_that_occur_more_than_once(values):
    import collections

    import numpy as np

    from billing_jobs.dedupe import _maybe_repeated

    hashes = np.array(values, dtype=np.uint64)
    counts = collections.Counter(values)
    assert _maybe_repeated(hashes).tolist() == [counts[v] > 1 for v in values]
