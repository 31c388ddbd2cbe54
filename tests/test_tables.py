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
