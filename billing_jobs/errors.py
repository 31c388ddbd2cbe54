"""One family for every failure we expect (data-contracts.md §4): each is a `BillingError` whose
message is one line a person can act on, and which says whether trying again can help.

- `transient = False` (the default): the input, the configuration or the data is wrong; the same
  run fails the same way until somebody changes something. Airflow fails such a task at once.
- `transient = True`: the world was briefly in the way (warehouse locked, connection lost,
  storage unavailable); Airflow retries with backoff.

The command line catches `BillingError` once, in `cli.main`; the Airflow tasks classify with
`is_transient` and log `one_line` first. Nothing here prints: callers decide where words go.
"""

from __future__ import annotations

import re

MAX_REASON = 400  # characters of a reason kept in billing_runs.error and shown to people

# user:password@ in any URL, and password=… in a DSN or an option string
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)@")
_KEY_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>[^\s&;]+)", re.IGNORECASE)
# a phone number as a value of its own (a CSV cell, a quoted value): 7 to 15 digits, optional +;
# digits inside a word (wamid.123…) or a longer number are not one
_PHONE = re.compile(r"(?<![\w.])\+?\d{7,15}(?![\w.])")


class BillingError(Exception):
    """An expected failure; `str()` is one line."""

    transient = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class ConfigError(BillingError):
    """A setting, flag, URL or path that cannot work; checked before any work starts."""


class UsageError(BillingError):
    """What the user asked for does not exist or makes no sense (an unknown invoice, a range
    that ends before it starts)."""


class LandingError(BillingError):
    """The landing zone cannot be used at all (unreadable file, missing directory)."""


class ReferenceDataError(BillingError):
    """Reference data that cannot be used; the message names file, row and value."""


class PricingError(BillingError):
    """Starts that cannot be priced exactly once; the message lists examples."""


class AuditFailed(BillingError):
    """At least one expectation failed; the message names them."""


class RunError(BillingError):
    """A run that cannot go on (no partition, a staged run that is not complete)."""


class CloseRefused(BillingError):
    """The month cannot be closed yet; the message lists the days in the way."""


class WarehouseError(BillingError):
    """The warehouse cannot be reached, is busy, refused the load or the user's rights."""


def redact(text: str) -> str:
    """`text` with any password in a URL or a `password=` option replaced by `***`, and anything
    that may be a phone number (an echoed input row) by `<number>`: no message we write carries
    either."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)
    text = _KEY_PASSWORD.sub(lambda m: f"{m['head']}***", text)
    return _PHONE.sub("<number>", text)


def one_line(exc: BaseException) -> str:
    """What went wrong in one redacted line: the message of a `BillingError`, else the exception's
    type and the first line of its text (a database error's SQL and parameters are dropped)."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    source = orig if orig is not None else exc
    lines = [line.strip() for line in str(source).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if not isinstance(exc, BillingError):
        first = f"{type(source).__name__}: {first}" if first else type(source).__name__
    first = redact(first)
    return first if len(first) <= MAX_REASON else first[:MAX_REASON - 1] + "…"


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same step can help: a `BillingError` says so itself; a lost database
    connection or an unavailable storage (OSError other than a missing file or a refused
    permission) may pass; anything else is a bug or bad data and fails at once."""
    if isinstance(exc, BillingError):
        return exc.transient
    try:
        import sqlalchemy as sa

        if isinstance(exc, sa.exc.DBAPIError):
            return bool(exc.connection_invalidated) or isinstance(exc, sa.exc.OperationalError)
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        pass
    return isinstance(exc, OSError) and not isinstance(
        exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError))
