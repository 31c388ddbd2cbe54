"""The array helpers of tables.py equal what they replace, on arbitrary inputs."""

from __future__ import annotations

import datetime as dt
import itertools

import pyarrow as pa
import pyarrow.compute as pc
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
# table index), so that repeats, near-misses and collisions of the filter all occur, in both
# halves of the range (sorted on two threads)
_HASHES = st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1),
                             st.integers(0, 40).map(lambda k: k + (1 << 22) * 3),
                             st.integers(0, 40).map(lambda k: k + (1 << 40)),
                             st.integers(0, 40).map(lambda k: k + (1 << 63))), max_size=300)


@given(_HASHES, st.booleans())
def test_maybe_repeated_marks_exactly_the_hashes_that_occur_more_than_once(values, halves):
    import collections

    import numpy as np

    from billing_jobs.dedupe import _maybe_repeated

    hashes = np.array(values, dtype=np.uint64)
    counts = collections.Counter(values)
    assert _maybe_repeated(hashes, halves).tolist() == [counts[v] > 1 for v in values]
    assert hashes.tolist() == values  # the rows' hashes are left in row order


# the accepted-messages profile as it was first written, in SQL: the definition the numpy count
# in day.accepted_profile must equal
PROFILE_SQL = """
    select cast(direction as varchar) as direction, cast(message_type as varchar) as message_type,
        cast(status as varchar) as status, count(*) as messages
    from accepted where kept group by all order by all
"""
TOTALS_SQL = """
    select count(*), count(distinct message_id), count(*) filter (where message_id is null
        or customer_id is null or line_id is null or contact_id is null or direction is null
        or message_type is null or sent_at is null or status is null)
    from accepted where kept
"""
_VALUE = st.one_of(st.none(), st.sampled_from(["inbound", "outbound", "read", "sent", "é"]))
_ROW = st.tuples(st.one_of(st.none(), st.sampled_from(["m1", "m2", "m3", "m\x00", ""])),
                 _VALUE, _VALUE, _VALUE, st.booleans(), st.booleans())


@given(st.lists(_ROW, max_size=60), st.integers(1, 3))
def test_the_accepted_profile_equals_its_sql_definition(rows, chunks):
    import duckdb
    import numpy as np

    from billing_jobs.day import accepted_profile
    from billing_jobs.dedupe import id_hashes

    def column(values, dictionary):
        cut = [len(values) * k // chunks for k in range(chunks + 1)]
        pieces = [pa.array(values[a:b], pa.string()) for a, b in itertools.pairwise(cut)]
        if dictionary:  # each chunk its own dictionary, as files read one by one have
            pieces = [p.dictionary_encode() for p in pieces]
        return pa.chunked_array(pieces, pieces[0].type if pieces else pa.string())

    table = pa.table({
        "message_id": column([r[0] for r in rows], False),
        "customer_id": column(["C1"] * len(rows), True),
        "line_id": column([None if r[5] else "L1" for r in rows], True),
        "contact_id": column(["1"] * len(rows), True),
        "direction": column([r[1] for r in rows], True),
        "message_type": column([r[2] for r in rows], True),
        "sent_at": pa.array([dt.datetime(2026, 3, 1)] * len(rows), pa.timestamp("ns", "UTC")),
        "status": column([r[3] for r in rows], True),
    })
    kept = np.array([r[4] for r in rows], dtype=bool)

    class Result:
        class deduplicated:  # stands in for dedupe.Deduplicated
            pass

    Result.deduplicated.table, Result.deduplicated.rows = table, np.flatnonzero(kept)
    Result.deduplicated.hashes = id_hashes(table.column("message_id"))
    profile = accepted_profile(Result)
    with duckdb.connect() as con:
        con.register("accepted", table.append_column("kept", pa.array(kept)))
        expected = con.sql(PROFILE_SQL).fetchall() or [("inbound", "session", "sent", 0)]
        totals = con.sql(TOTALS_SQL).fetchall()[0]
    assert profile.select(["direction", "message_type", "status", "messages"]).to_pylist() == [
        dict(zip(("direction", "message_type", "status", "messages"), row)) for row in expected]
    for name, value in zip(("rows", "distinct_message_ids", "missing_required_values"), totals):
        assert profile.column(name).to_pylist() == [value] * profile.num_rows


def test_distinct_ids_are_exact_when_hashes_collide():
    """Two different ids with one 64-bit hash still count as two (hashes that collide on
    purpose: a real collision is one chance in 10^19 per pair)."""
    import numpy as np

    from billing_jobs import day

    ids = pa.chunked_array([pa.array(["a", "b", "a", "cc", "dd", None])])
    hashes = np.array([len(v or "") for v in ids.to_pylist()], dtype=np.uint64)
    assert day._distinct(ids, hashes, np.arange(6)) == 4
    assert day._distinct(ids, hashes, np.array([0, 2, 5])) == 1


_ID_TEXT = st.text(alphabet=st.sampled_from(["a", "é", "\x00", "\x1f", "\x7f", "\x80", "🙂", "7"]),
                   max_size=8)


@given(st.lists(st.one_of(st.none(), _ID_TEXT), max_size=30), st.integers(0, 5),
       st.integers(1, 3))
def test_message_id_check_equals_the_regex_on_every_text(values, offset, chunks):
    """The check reads raw bytes before it runs the regex; slices and chunks included."""
    import pyarrow.compute as pc

    from billing_jobs.landing import MAX_MESSAGE_ID, _is_message_id

    array = pa.array(values, pa.string()).slice(min(offset, len(values)))
    cut = [len(array) * k // chunks for k in range(chunks + 1)]
    column = pa.chunked_array([array.slice(a, b - a) for a, b in itertools.pairwise(cut)],
                              pa.string())
    expected = pc.and_(pc.less_equal(pc.utf8_length(column), MAX_MESSAGE_ID),
                       pc.invert(pc.match_substring_regex(column, r"[[:cntrl:]]")))
    assert _is_message_id(column).to_pylist() == expected.to_pylist()
    assert _is_message_id(array).to_pylist() == expected.to_pylist()


@given(st.lists(st.one_of(st.none(), st.integers(0, 30))), st.integers(0, 40), st.integers(0, 40))
def test_a_slice_keeps_its_values_and_only_the_dictionary_it_uses(codes, start, length):
    """What a prepared piece is written with: a slice of a file's dictionary column."""
    from billing_jobs.tables import used_dictionary

    values = [None if c is None else f"k{c}" for c in codes]
    whole = pc.dictionary_encode(pa.array(values + [f"k{c}" for c in range(31)], pa.string()))
    part = whole.slice(min(start, len(values)), min(length, max(0, len(values) - start)))
    kept = used_dictionary(part)
    assert kept.to_pylist() == part.to_pylist()
    assert sorted(kept.dictionary.to_pylist()) == sorted({v for v in part.to_pylist() if v})


def test_the_in_process_database_is_opened_once_and_never_spills():
    """One DuckDB database per process (opening one per file cost a split 15-50 ms each), which
    never writes a temp file (what it holds may be phone numbers); each use its own connection,
    whose registered tables no other connection sees (threads side by side register `ids`)."""
    from billing_jobs.tables import in_memory_duckdb

    with in_memory_duckdb() as first:
        first.execute("create or replace table opened_once as select 1 as x")
        first.register("ids", pa.table({"id": ["a"]}))
        with in_memory_duckdb() as second:
            assert second.sql("select x from opened_once").fetchall() == [(1,)]
            assert second.sql("select current_setting('temp_directory')").fetchall() == [("",)]
            second.register("ids", pa.table({"id": ["b", "c"]}))
            assert second.sql("select count(*) from ids").fetchall() == [(2,)]
        assert first.sql("select id from ids").fetchall() == [("a",)]
        first.execute("drop table opened_once")


def test_a_process_forked_after_using_the_database_uses_one_and_ends_cleanly():
    """A database's threads do not survive a fork: a child that inherited its parent's open
    database crashed when its interpreter shut down (seen: SIGSEGV). None is open across a
    fork; parent and child reopen on their next use."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import os, sys
        import pyarrow as pa
        from billing_jobs.dedupe import id_hashes
        ids = pa.array(["m1", "m2", "m1"])
        expected = id_hashes(ids).tolist()  # the parent's database is open
        pid = os.fork()
        if pid == 0:
            assert id_hashes(ids).tolist() == expected
            sys.exit(0)  # as a process ends: its interpreter shuts down
        status = os.waitpid(pid, 0)[1]
        assert id_hashes(ids).tolist() == expected  # the parent's reopens
        print(status)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # the child's exit status: exit code 0, no signal


def test_arrow_buffers_come_from_jemalloc_unless_the_operator_says_otherwise():
    """The pool the benchmarks were measured with (tables._buffers_from_jemalloc), and the
    operator's ARROW_DEFAULT_MEMORY_POOL when set."""
    import os
    import subprocess
    import sys

    script = ("import billing_jobs.landing, pyarrow as pa; "
              "print(pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    pools = [subprocess.run([sys.executable, "-c", script], env={**env, **extra},
                            capture_output=True, text=True, check=True).stdout.strip()
             for extra in ({}, {"ARROW_DEFAULT_MEMORY_POOL": "system"})]
    assert pools == ["jemalloc", "system"]
