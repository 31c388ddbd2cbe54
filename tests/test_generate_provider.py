"""The simulated WhatsApp side (generate_provider.py): the vectorised model opens exactly the
conversations the message-by-message model opens, on generated traffic."""

from __future__ import annotations

import datetime as dt

import numpy as np

from billing_jobs import landing
from billing_jobs.dedupe import deduplicate
from billing_jobs.generate import generate
from billing_jobs.generate_provider import simulate, simulate_reference


def test_the_vectorised_model_opens_what_the_reference_opens(tmp_path):
    start = dt.date(2026, 3, 1)
    generate(tmp_path, start, days=3, messages_per_day=3000, seed=5, provider=False)
    files = [f for d in range(3)
             for f in landing.partition_files(tmp_path, start + dt.timedelta(days=d))]
    messages = deduplicate(landing.read_files(files).valid).table
    delays = np.random.default_rng(1).integers(1, 10, size=messages.num_rows)
    fast = simulate(messages, delays).to_pylist()
    slow = simulate_reference(messages, delays)
    for c in slow:
        c["opened_at"] = int(c["opened_at"].timestamp()) * 10**9 + c["opened_at"].microsecond * 1000
    assert len(fast) > 100 and {c["conversation_type"] for c in fast} == {
        "user_initiated", "business_initiated"}
    assert fast == slow
