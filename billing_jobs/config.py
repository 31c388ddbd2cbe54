"""Configuration: command-line flags, then environment variables, then embedded defaults
(data-contracts.md §4). The defaults make `make demo` work on a fresh checkout."""

from __future__ import annotations

import os
from dataclasses import dataclass

# Labelled as what it is: a pseudonym keyed with a published secret protects nobody.
DEMO_CONTACT_KEY_SECRET = "demo-only-secret-do-not-use-in-production"
DEFAULTS = {
    "source": "var/landing",
    "reference": None,  # <source>/reference
    "warehouse_url": "duckdb:///var/warehouse.duckdb",
    "contact_key_secret": DEMO_CONTACT_KEY_SECRET,
    "schema": "billing",
    "staging": "var/staging",
    "lock_wait_s": "120",
    "staging_keep_days": "14",
    "rows_per_shard": "4000000",
}
ENVIRONMENT = {
    "source": "BILLING_SOURCE",
    "reference": "BILLING_REFERENCE",
    "warehouse_url": "BILLING_WAREHOUSE_URL",
    "contact_key_secret": "BILLING_CONTACT_KEY_SECRET",
    "schema": "BILLING_SCHEMA",
    "staging": "BILLING_STAGING",
    "lock_wait_s": "BILLING_LOCK_WAIT_S",
    "staging_keep_days": "BILLING_STAGING_KEEP_DAYS",
    "rows_per_shard": "BILLING_ROWS_PER_SHARD",
}


@dataclass(frozen=True)
class Settings:
    source: str
    reference: str
    warehouse_url: str
    contact_key_secret: str
    schema: str
    staging: str  # where a run writes its results before they are audited and published
    lock_wait_s: float  # how long to wait for a busy warehouse or date lock
    staging_keep_days: float = 14.0  # staged runs older than this are pruned (staging.py)
    rows_per_shard: float = 4e6  # rows of the D-2..D window per shard when not told (shards.py)

    @property
    def uses_demo_secret(self) -> bool:
        return self.contact_key_secret == DEMO_CONTACT_KEY_SECRET

    @classmethod
    def resolve(cls, **flags: str | None) -> Settings:
        values = {}
        for key, default in DEFAULTS.items():
            value = flags.get(key)
            if value is None:
                value = os.environ.get(ENVIRONMENT[key]) or default
            values[key] = value
        if values["reference"] is None:
            values["reference"] = os.path.join(values["source"], "reference")
        for key in ("lock_wait_s", "staging_keep_days", "rows_per_shard"):
            try:
                values[key] = float(values[key])
            except ValueError:
                raise ValueError(f"{key} ({ENVIRONMENT[key]}) must be a number, "
                                 f"got {values[key]!r}") from None
        return cls(**values)
