"""`billing-jobs`: the one command line (data-contracts.md §4). Every failure ends in one line
naming what was wrong and a non-zero exit, never a bare traceback."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path


class UsageError(Exception):
    """A problem with what the user asked for or gave us, reported as one line."""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def cmd_generate(args: argparse.Namespace) -> None:
    from billing_jobs.generate import generate

    info = generate(args.out, args.start, args.days, args.messages_per_day, args.seed, args.format)
    print(f"wrote {info['rows']:,} message rows over {args.days} day(s) for "
          f"{info['customers']} customers on {info['lines']} lines under {args.out}")


def cmd_reconcile(args: argparse.Namespace) -> None:
    from billing_jobs import landing
    from billing_jobs.reconcile import reconcile

    result = reconcile(landing.read_files(landing.message_files(args.messages)))
    _write_table(result.starts, args.out)
    if args.anomalies:
        _write_table(result.anomalies, args.anomalies)
    c = result.counts()
    print(f"read {c['rows_read']:,} rows: {c['accepted']:,} accepted ({c['failed']:,} failed sends), "
          f"{c['duplicates']:,} duplicates, {c['quarantined']:,} quarantined; "
          f"{c['starts']:,} conversation starts, {c['anomalies']:,} outside-session anomalies "
          f"-> {args.out}")
    if c["quarantined"]:
        reasons = result.quarantined.group_by("reason").aggregate([("reason", "count")])
        detail = ", ".join(f"{r['reason']} {r['reason_count']}" for r in reasons.to_pylist())
        print(f"quarantined by reason: {detail}")


def cmd_explain(args: argparse.Namespace) -> None:
    from billing_jobs import landing
    from billing_jobs.explain import explain_stream

    batch = landing.read_files(landing.message_files(args.messages))
    print(explain_stream(batch, args.line, args.contact))


def cmd_run(args: argparse.Namespace) -> None:
    from billing_jobs import pipeline
    from billing_jobs.config import Settings

    settings = Settings.resolve(source=args.source, reference=args.reference,
                                warehouse_url=args.warehouse)
    last = args.to or args.date
    if last < args.date:
        raise UsageError(f"--to {last} is before --date {args.date}")
    if settings.uses_demo_secret:
        print("note: contact keys use the DEMO secret; set BILLING_CONTACT_KEY_SECRET in production",
              file=sys.stderr)
    days = [args.date + dt.timedelta(days=k) for k in range((last - args.date).days + 1)]
    summary = []
    for i, day in enumerate(days, start=1):
        print(f"[{i}/{len(days)}] {day}: ", end="", flush=True)
        try:
            done = pipeline.run_day(settings, day, dry_run=args.dry_run, shards=args.shards)
        except Exception as exc:
            print("FAILED")
            raise UsageError(f"{day}: {_one_line(exc)} (nothing published for {day}"
                             f"{'; later days not run' if i < len(days) else ''})") from exc
        verb = "published" if done["published"] else "audited (dry run, not published)"
        amount = done.get("amount")
        print(f"{verb}: {done['starts_on_day']:,} starts"
              + (f", amount {amount:.4f}" if amount is not None else "")
              + f", {done['rows_read']:,} rows read, {done['quarantined']:,} quarantined "
              f"(run {done['run_id']})", flush=True)
        summary.append((day, done))
    if len(days) > 1:
        print(f"\n{'date':<12}{'starts':>10}{'amount':>16}{'read':>12}{'quarantined':>13}")
        for day, done in summary:
            amount = f"{done['amount']:.4f}" if done.get("amount") is not None else "-"
            print(f"{day!s:<12}{done['starts_on_day']:>10,}{amount:>16}{done['rows_read']:>12,}"
                  f"{done['quarantined']:>13,}")


def cmd_restate(args: argparse.Namespace) -> None:
    from billing_jobs.config import Settings
    from billing_jobs.restate import restate, stale_days

    settings = Settings.resolve(source=args.source, reference=args.reference,
                                warehouse_url=args.warehouse)
    if args.dry_run:
        days = stale_days(settings, args.since)
        print("would re-bill: " + (", ".join(map(str, days)) if days else "nothing"))
        return
    done = restate(settings, args.since)
    for day, result in done:
        print(f"{day}: re-billed: {result['starts_on_day']:,} starts, amount {result['amount']:.4f} "
              f"(run {result['run_id']})")
    if not done:
        print(f"every published day since {args.since} is up to date")


def _month(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text + "-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a month (YYYY-MM): {text!r}") from None


def cmd_close(args: argparse.Namespace) -> None:
    from billing_jobs.config import Settings
    from billing_jobs.invoicing import CloseRefused, close_month

    try:
        invoices = close_month(Settings.resolve(warehouse_url=args.warehouse), args.month)
    except CloseRefused as exc:
        raise UsageError(str(exc)) from None
    if not invoices:
        print(f"{args.month:%Y-%m} is already closed: nothing changed")
    for inv in invoices:
        print(f"invoice {inv['invoice_number']}: {inv['customer_id']} {inv['currency']} "
              f"{inv['total']} ({inv['items']} items, exact {inv['exact_total']})")


def cmd_trace(args: argparse.Namespace) -> None:
    from billing_jobs.config import Settings
    from billing_jobs.invoicing import trace

    rows = trace(Settings.resolve(warehouse_url=args.warehouse), args.invoice, args.item)
    if not rows:
        raise UsageError(f"invoice {args.invoice}" + (f" item {args.item}" if args.item else "")
                         + ": no such invoice item")
    print("item  kind        message_id                    started_at (UTC)      sign  unit_price"
          "    rate_row  country  type")
    for r in rows:
        print(f"{r['item_no']:<5} {r['kind']:<11} {r['message_id']:<29} "
              f"{str(r['started_at'])[:19]:<21} {r['sign']:>4}  {r['unit_price']:<13} "
              f"{r['rate_row']:<9} {r['country']:<8} {r['conversation_type']}")


def cmd_export(args: argparse.Namespace) -> None:
    from billing_jobs.config import Settings
    from billing_jobs.invoicing import export_month

    paths = export_month(Settings.resolve(warehouse_url=args.warehouse), args.month,
                         Path(args.out), args.customer)
    if not paths:
        raise UsageError(f"no issued invoices for {args.month:%Y-%m}"
                         + (f" and customer {args.customer}" if args.customer else ""))
    for path in paths:
        print(path)


def cmd_prune_staging(args: argparse.Namespace) -> None:
    from billing_jobs.config import Settings
    from billing_jobs.staging import prune

    try:
        settings = Settings.resolve(staging=args.staging, staging_keep_days=args.keep_days)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if settings.staging_keep_days < 1:
        raise UsageError(f"--keep-days must be at least 1, got {settings.staging_keep_days:g}")
    runs = prune(settings.staging, settings.staging_keep_days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for run in runs:
        print(f"{verb} {run.folder} (started {run.started_at:%Y-%m-%d %H:%M} UTC, "
              f"{run.bytes / 2**20:,.1f} MiB)")
    print(f"{verb} {len(runs)} staged run(s) older than {settings.staging_keep_days:g} days, "
          f"{sum(r.bytes for r in runs) / 2**20:,.1f} MiB")


def cmd_audit_docs(args: argparse.Namespace) -> None:
    from billing_jobs.audit import build_docs
    from billing_jobs.config import Settings

    root = Path(Settings.resolve().staging) / "gx"
    if not root.exists():
        raise UsageError(f"no audit results under {root}: run a day first")
    print(f"Data Docs: {build_docs(root)}")


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _write_table(table, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif path.suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        raise UsageError(f"{out}: output must end in .parquet or .csv")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="billing-jobs", description=__doc__.split(".")[0] + ".")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write a synthetic landing zone and reference set")
    g.add_argument("--out", required=True, help="directory to write messages/ and reference/ into")
    g.add_argument("--start", required=True, type=_date, help="first day, YYYY-MM-DD")
    g.add_argument("--days", required=True, type=_positive)
    g.add_argument("--messages-per-day", required=True, type=_positive)
    g.add_argument("--seed", type=int, default=7, help="same seed, same files (default 7)")
    g.add_argument("--format", choices=["parquet", "csv", "jsonl", "mixed"], default="parquet",
                   help="file format of the message files (mixed: round robin per day)")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("reconcile", help="pure rules: message files in, conversation starts out")
    r.add_argument("--messages", required=True, nargs="+", metavar="PATH",
                   help="message files or directories (parquet, csv, jsonl)")
    r.add_argument("--out", required=True, metavar="FILE", help="starts, .parquet or .csv")
    r.add_argument("--anomalies", metavar="FILE", help="outside-session anomalies, .parquet or .csv")
    r.set_defaults(func=cmd_reconcile)

    u = sub.add_parser("run", help="the daily pipeline: write, audit, publish one date or a range")
    u.add_argument("--date", required=True, type=_date, help="billing date, YYYY-MM-DD (UTC)")
    u.add_argument("--to", type=_date, help="last billing date of an inclusive range")
    u.add_argument("--source", help="landing zone (default $BILLING_SOURCE or var/landing)")
    u.add_argument("--reference", help="reference CSVs (default $BILLING_REFERENCE or "
                                       "<source>/reference)")
    u.add_argument("--warehouse", help="SQLAlchemy URL (default $BILLING_WAREHOUSE_URL or "
                                       "duckdb:///var/warehouse.duckdb)")
    u.add_argument("--dry-run", action="store_true", help="write and audit, publish nothing")
    u.add_argument("--shards", type=_positive, default=None,
                   help="compute the day in N pieces by line (bounded memory; same result); "
                        "default: one per $BILLING_ROWS_PER_SHARD (4M) rows of D-2..D")
    u.set_defaults(func=cmd_run)

    s = sub.add_parser("restate", help="re-bill published days whose input partitions changed")
    s.add_argument("--since", required=True, type=_date, help="first billing date to check")
    s.add_argument("--source")
    s.add_argument("--reference")
    s.add_argument("--warehouse")
    s.add_argument("--dry-run", action="store_true", help="only list the days to re-bill")
    s.set_defaults(func=cmd_restate)

    c = sub.add_parser("close", help="issue the month's invoices (idempotent)")
    c.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    c.add_argument("--warehouse")
    c.set_defaults(func=cmd_close)

    t = sub.add_parser("trace", help="the conversation starts behind an invoice or invoice item")
    t.add_argument("--invoice", required=True, type=int)
    t.add_argument("--item", type=int)
    t.add_argument("--warehouse")
    t.set_defaults(func=cmd_trace)

    x = sub.add_parser("export", help="one CSV per issued invoice of a month")
    x.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    x.add_argument("--customer")
    x.add_argument("--out", required=True)
    x.add_argument("--warehouse")
    x.set_defaults(func=cmd_export)

    g = sub.add_parser("prune-staging", help="remove staged runs older than --keep-days")
    g.add_argument("--keep-days", help="default: BILLING_STAGING_KEEP_DAYS, else 14")
    g.add_argument("--staging", help="default: BILLING_STAGING, else var/staging")
    g.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    g.set_defaults(func=cmd_prune_staging)

    a = sub.add_parser("audit-docs", help="build Great Expectations Data Docs from kept results")
    a.set_defaults(func=cmd_audit_docs)

    e = sub.add_parser("explain", help="one stream's timeline with the decision for each message")
    e.add_argument("--line", required=True, help="line_id")
    e.add_argument("--contact", required=True, help="contact_id, as in the message log")
    e.add_argument("--messages", required=True, nargs="+", metavar="PATH")
    e.set_defaults(func=cmd_explain)
    return p


def main(argv: list[str] | None = None) -> int:
    from billing_jobs.landing import LandingError

    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (LandingError, UsageError) as exc:
        print(f"billing-jobs {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"billing-jobs {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
