"""Every worked example of billing-rules.md, on the reference and on the engine."""

from __future__ import annotations

import pytest
from helpers import charged, engine_result, msg, reference_result

U, B = "user_initiated", "business_initiated"
IMPLEMENTATIONS = {"reference": reference_result, "engine": engine_result}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def run(request):
    return IMPLEMENTATIONS[request.param]


def test_example_a_two_attempts_two_charges(run):
    r = run([msg("t0", "tpl", 0), msg("t30", "tpl", 30), msg("i40", "in", 40)])
    assert charged(r) == [("t0", B), ("t30", B)]


def test_example_b_answer_after_24h_is_user_initiated(run):
    r = run([msg("t0", "tpl", 0), msg("i30", "in", 30)])
    assert charged(r) == [("t0", B), ("i30", U)]


def test_example_c_free_template_is_no_attempt(run):
    r = run([msg("i0", "in", 0), msg("f1", "free", 1), msg("t23", "tpl", 23), msg("i30", "in", 30)])
    assert charged(r) == [("i0", U), ("i30", U)]
    assert r["anomalies"] == []


def test_example_d_inbound_extends_the_session(run):
    r = run([msg("i0", "in", 0), msg("i20", "in", 20), msg("t43", "tpl", 43)])
    assert charged(r) == [("i0", U)]


def test_example_e_exactly_24h_is_a_new_session(run):
    r = run([msg("i0", "in", 0), msg("i24", "in", 24)])
    assert charged(r) == [("i0", U), ("i24", U)]


def test_example_f_templates_minutes_apart_are_two_attempts(run):
    r = run([msg("t0", "tpl", 0), msg("t1", "tpl", 1), msg("i2", "in", 2)])
    assert charged(r) == [("t0", B), ("t1", B)]


def test_example_g_failed_template_neither_opens_nor_charges(run):
    r = run([msg("t0", "tpl", 0, status="failed"), msg("i5", "in", 5)])
    assert charged(r) == [("i5", U)]


def test_example_h_free_form_outside_session_is_an_anomaly(run):
    r = run([msg("f0", "free", 0)])
    assert charged(r) == []
    assert r["anomalies"] == ["f0"]


# Rules stated in the spec's prose, beside the table.


def test_inbound_before_outbound_at_the_same_instant(run):
    # the inbound at h0 sorts first, so the template at the same instant is inside its session
    r = run([msg("t", "tpl", 0), msg("i", "in", 0)])
    assert charged(r) == [("i", U)]


def test_same_instant_inbounds_ordered_by_message_id_bytes(run):
    # "B" (0x42) < "a" (0x61) byte-wise: B opens the session and is the charged start
    r = run([msg("a", "in", 0), msg("B", "in", 0)])
    assert charged(r) == [("B", U)]


def test_template_exactly_24h_after_inbound_is_outside_session(run):
    r = run([msg("i0", "in", 0), msg("t24", "tpl", 24)])
    assert charged(r) == [("i0", U), ("t24", B)]


def test_answer_exactly_24h_after_attempt_is_user_initiated(run):
    r = run([msg("t0", "tpl", 0), msg("i24", "in", 24)])
    assert charged(r) == [("t0", B), ("i24", U)]


def test_streams_are_independent(run):
    r = run([msg("t0", "tpl", 0, line="L1"), msg("i1", "in", 1, line="L2"),
             msg("i2", "in", 2, line="L1", contact="+200")])
    assert charged(r) == [("t0", B), ("i1", U), ("i2", U)]


def test_status_copies_are_one_message_with_the_most_advanced_status(run):
    # sent then failed: lost; failed then delivered: it was not lost after all
    lost = run([msg("t0", "tpl", 0, "sent"), msg("t0", "tpl", 0, "failed")])
    assert charged(lost) == [] and lost["duplicates"] == 1
    kept = run([msg("t0", "tpl", 0, "failed"), msg("t0", "tpl", 0, "delivered"),
                msg("t0", "tpl", 0, "read")])
    assert charged(kept) == [("t0", B)] and kept["duplicates"] == 2


def test_conflicting_copies_are_all_quarantined_and_not_billed(run):
    r = run([msg("x", "in", 0), msg("x", "in", 1), msg("i5", "in", 5)])
    assert r["conflicts"] == ["x", "x"]
    assert charged(r) == [("i5", U)]
