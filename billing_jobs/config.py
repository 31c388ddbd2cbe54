"""Configuration: command-line flags, then environment variables, then embedded defaults
(data-contracts.md §4). The defaults make `make demo` work on a fresh checkout.

This is the only module that reads `BILLING_*` variables. `Settings.check()` verifies what can be
verified without doing any work (the warehouse URL names a dialect we can load, the landing zone
exists), so a bad setting fails a run in its first second, not after the write and the audit."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from billing_jobs import shipped
from billing_jobs.errors import ConfigError, redact

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
    "expectations": None,  # the suites shipped with the package
    "gx": None,  # <staging>/gx when the staging area is local, else var/gx
    "allow_demo_secret": "",  # tests only: the demo secret with a warehouse other than DuckDB
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
    "expectations": "BILLING_EXPECTATIONS",
    "gx": "BILLING_GX_PROJECT",
    "allow_demo_secret": "BILLING_ALLOW_DEMO_SECRET",
}
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")  # BILLING_SCHEMA: a plain lower-case identifier
NUMBERS = ("lock_wait_s", "staging_keep_days", "rows_per_shard")
# URL schemes people type that SQLAlchemy does not know, and what they meant
URL_HINTS = {"postgres": "postgresql+psycopg", "postgresql+psycopg2": "postgresql+psycopg",
             "duckdb+duckdb": "duckdb", "pg": "postgresql+psycopg"}


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
    expectations: str = ""  # the Great Expectations suites (expectations/*.json)
    gx: str = ""  # the GX project: a local folder, even when the staging area is a URL
    allow_demo_secret: bool = False

    @property
    def uses_demo_secret(self) -> bool:
        return self.contact_key_secret == DEMO_CONTACT_KEY_SECRET

    @property
    def key_id(self) -> str:
        """Which contact-key secret is in use, as a name that reveals nothing of it: `demo`, or
        the first 12 hex digits of an HMAC of a fixed label under the secret."""
        if self.uses_demo_secret:
            return "demo"
        import hashlib
        import hmac

        return hmac.new(self.contact_key_secret.encode(), b"billing-jobs key id",
                        hashlib.sha256).hexdigest()[:12]

    def check_secret(self) -> None:
        """The demo secret is public: contact keys made with it are reversed by trying every
        number. It is for the embedded DuckDB warehouse (demos, tests) only."""
        if not self.contact_key_secret:
            raise ConfigError("BILLING_CONTACT_KEY_SECRET is empty")
        if (self.uses_demo_secret and not self.warehouse_url.startswith("duckdb:")
                and not self.allow_demo_secret):
            raise ConfigError("the demo contact-key secret is refused for a warehouse other than "
                              "the embedded DuckDB: set BILLING_CONTACT_KEY_SECRET (or, in tests "
                              "only, BILLING_ALLOW_DEMO_SECRET=1)")

    @property
    def suites(self) -> Path:
        return Path(self.expectations) if self.expectations else shipped("expectations")

    @property
    def gx_project(self) -> Path:
        """Where audits keep their GX results and Data Docs. GX's file project needs a local
        folder; each run's verdict (audit.json) is in its run folder wherever that is."""
        if self.gx:
            return Path(self.gx)
        if "://" in self.staging and not self.staging.startswith("file://"):
            return Path("var/gx")
        return Path(self.staging.removeprefix("file://")) / "gx"

    @property
    def warehouse_display(self) -> str:
        """The warehouse URL as it may be shown: without its password."""
        return redact(self.warehouse_url)

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
        values["expectations"] = values["expectations"] or ""
        values["gx"] = values["gx"] or ""
        values["allow_demo_secret"] = str(values["allow_demo_secret"]).lower() in ("1", "true",
                                                                                   "yes")
        for key in NUMBERS:
            try:
                values[key] = float(values[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{key} ({ENVIRONMENT[key]}) must be a number, "
                                  f"got {values[key]!r}") from None
        return cls(**values)

    def check_warehouse(self) -> None:
        """The warehouse URL names a dialect whose driver is installed; the schema is a name."""
        check_warehouse_url(self.warehouse_url)
        if not SCHEMA_NAME.fullmatch(self.schema):
            raise ConfigError(f"schema name must be a lower-case identifier (BILLING_SCHEMA): "
                              f"{self.schema!r}")

    def check_source(self) -> None:
        """The landing zone and its reference folder exist (URLs are checked when read)."""
        for what, place in (("landing zone", self.source), ("reference folder", self.reference)):
            if "://" in place:
                continue
            if not Path(place).exists():
                raise ConfigError(f"{what} {place} does not exist (--source / BILLING_SOURCE, "
                                  f"--reference / BILLING_REFERENCE)")
            if not Path(place).is_dir():
                raise ConfigError(f"{what} {place} is not a directory")

    def check_expectations(self) -> None:
        if not self.suites.is_dir():
            raise ConfigError(f"expectation suites {self.suites} do not exist "
                              f"(BILLING_EXPECTATIONS)")


def check_warehouse_url(text: str) -> None:
    """Raise ConfigError, saying what to write instead, unless `text` is a SQLAlchemy URL whose
    dialect and driver are installed. The message never shows the URL's password."""
    import sqlalchemy as sa

    shown = redact(text)
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError:
        raise ConfigError(f"warehouse URL {shown!r} is not a SQLAlchemy URL (e.g. "
                          f"duckdb:///var/warehouse.duckdb or postgresql+psycopg://user@host/db)"
                          ) from None
    hint = URL_HINTS.get(url.drivername)
    if hint:
        raise ConfigError(f"warehouse URL scheme {url.drivername}:// is not supported: write "
                          f"{hint}://… instead (psycopg 3)")
    try:
        url.get_dialect()
    except (sa.exc.NoSuchModuleError, ImportError):
        raise ConfigError(f"warehouse URL {shown!r}: no SQLAlchemy dialect {url.drivername!r} is "
                          f"installed (use duckdb:///FILE or postgresql+psycopg://…)") from None
