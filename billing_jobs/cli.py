"""`billing-jobs`: the one command line (data-contracts.md §4). Commands are thin: they check
the configuration before any work, call the package, and print. Every failure ends in one line
on stderr naming what was wrong, with no password and no traceback, and a non-zero exit
(`main` catches the error family of `billing_jobs.errors` once; set BILLING_DEBUG=1 to see the
traceback of an unexpected error)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from billing_jobs import auditor
from billing_jobs.errors import BillingError, UsageError, one_line, redact

MAX_ID = 2**31 - 1  # invoice and item numbers are INTEGER in the warehouse


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where to read more)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {redact(message)} (see {self.prog} --help)\n")


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


def _number(text: str) -> int:
    """An invoice or item number: 1 to 2^31-1."""
    value = _positive(text)
    if value > MAX_ID:
        raise argparse.ArgumentTypeError("too large: numbers here are at most 2**31 - 1")
    return value


def _days(args: argparse.Namespace) -> list[dt.date]:
    """--date, or the inclusive range --date..--to."""
    last = args.to or args.date
    if last < args.date:
        raise UsageError(f"--to {last} is before --date {args.date}")
    return [args.date + dt.timedelta(days=k) for k in range((last - args.date).days + 1)]


def _settings(args: argparse.Namespace, *, source: bool = False, warehouse: bool = True):
    """Settings from the command's flags, the environment and the defaults, checked before any
    work: a bad URL or a missing folder fails in the first second, not after the write."""
    from billing_jobs.config import Settings

    settings = Settings.resolve(source=getattr(args, "source", None),
                                reference=getattr(args, "reference", None),
                                warehouse_url=getattr(args, "warehouse", None))
    if source:
        settings.check_source()
    if warehouse:
        settings.check_warehouse()
        from billing_jobs.warehouse import check_reachable

        check_reachable(settings.warehouse_url, settings.lock_wait_s)
    return settings


def _say_secret(settings) -> None:
    """Which contact-key secret a command that writes contact keys uses (never the secret)."""
    settings.check_secret()
    if settings.uses_demo_secret:
        print("contact keys: the DEMO secret (public; set BILLING_CONTACT_KEY_SECRET in "
              "production)")
    else:
        print(f"contact keys: BILLING_CONTACT_KEY_SECRET, key id {settings.key_id}")


def cmd_generate(args: argparse.Namespace) -> None:
    from billing_jobs.generate import generate

    info = generate(args.out, args.start, args.days, args.messages_per_day, args.seed, args.format,
                    provider=not args.no_provider)
    print(f"wrote {info['rows']:,} message rows over {args.days} day(s) for "
          f"{info['customers']} customers on {info['lines']} lines under {args.out}")
    if "provider_conversations" in info:
        print(f"wrote WhatsApp's side: {info['provider_conversations']:,} conversations with "
              f"known noise (listed in {Path(args.out) / 'provider_injected.json'})")


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
    from billing_jobs import explain, landing, window
    from billing_jobs.config import Settings
    from billing_jobs.reference_data import load_reference

    if bool(args.messages) == bool(args.date):
        raise UsageError("give either --date (read the landing zone, D-2..D) or --messages FILES")
    settings = Settings.resolve(source=args.source, reference=args.reference,
                                warehouse_url=args.warehouse)
    warnings = []
    if args.date:
        last = _days(args)[-1]
        settings.check_source()
        missing = explain.missing_history(settings.source, args.date)
        if missing:
            warnings.append(f"no partition for {', '.join(map(str, missing))}: a conversation "
                            f"opened then is not seen, so charges near the start may be wrong")
        root = landing.location(settings.source)
        days = [window.partitions_read(args.date)[0] + dt.timedelta(days=k)
                for k in range((last - args.date).days + 3)]
        files = [f for d in days for f in landing.partition_files(root, d)]
        where = f"{args.date}" + (f" to {last}" if last != args.date else "")
    else:
        files = landing.message_files(args.messages)
        warnings.append("only the files given are read: a conversation opened in an earlier "
                        "file is not seen (use --date to read the two days before)")
        where = "the files given"
    try:
        ref = load_reference(settings.reference)
    except BillingError:
        ref = None
        warnings.append(f"no reference data at {settings.reference}: prices are not shown")
    batch = landing.read_files(files)
    canonical, rows, summary = explain.timeline(batch, args.line, args.contact, ref)
    key = explain.stream_key(canonical, settings.contact_key_secret)
    if not rows and not summary["quarantined"]:
        raise UsageError(f"no messages for line {args.line} and contact key {key} in {where}")
    if args.warehouse or os.environ.get("BILLING_WAREHOUSE_URL"):
        settings.check_warehouse()
        explain.add_invoices(rows, settings.warehouse_url, settings.schema, settings.lock_wait_s)
    if args.format == "csv":
        print(explain.render_csv(rows))
    elif args.format == "json":
        print(explain.render_json(args.line, key, rows, summary, warnings))
    else:
        print(explain.render_text(args.line, key, rows, summary, warnings))


def cmd_run(args: argparse.Namespace) -> None:
    # Great Expectations warms up in its own process, started first: its import (~3 s) ends
    # later than the day's computing on a 1M-message day, so the audit waits for it; the
    # command's own imports and checks (~0.6 s) go on meanwhile (a failed check stops it)
    auditor.start()
    from billing_jobs import sequence
    from billing_jobs.restate import unbilled_days

    days = _days(args)
    last = days[-1]
    settings = _settings(args, source=True)
    settings.check_expectations()
    _say_secret(settings)
    summary = []
    for i, day in enumerate(days, start=1):
        print(f"[{i}/{len(days)}] {day}: ", end="", flush=True)
        try:
            done = sequence.run_day(settings, day, dry_run=args.dry_run,
                                    shards=args.shards)
        except Exception as exc:
            print("FAILED", flush=True)
            rest = days[i:]
            if len(days) > 1:
                _print_summary(summary)
                try:  # the warehouse itself may be what failed: its answer is a bonus
                    unbilled = (unbilled_days(settings, args.date, last) if not args.dry_run
                                else [(d, "not run") for d in [day, *rest]])
                except Exception:  # noqa: BLE001 - the day's own error is reported below
                    unbilled = [(d, "not billed by this run") for d in [day, *rest]]
                _print_unbilled(unbilled)
            raise BillingError(f"{day}: {one_line(exc)} (nothing published for {day}"
                               + (f"; not run: {', '.join(map(str, rest))}" if rest else "")
                               + ")") from exc
        verb = "published" if done["published"] else "audited (dry run, not published)"
        amount = done.get("amount")
        print(f"{verb}: {done['starts_on_day']:,} starts"
              + (f", amount {amount:.4f}" if amount is not None else "")
              + f", {done['rows_read']:,} rows read, {done['quarantined']:,} quarantined "
              f"(run {done['run_id']})", flush=True)
        _print_adjustments(done)
        summary.append((day, done))
    if len(days) > 1:
        _print_summary(summary)
        if not args.dry_run:
            _print_unbilled(unbilled_days(settings, args.date, last))


def _print_adjustments(done: dict) -> None:
    """A re-run of a closed month's day says, per customer, the corrections it booked."""
    from billing_jobs.invoicing import describe_adjustments

    for line in describe_adjustments(done.get("adjustments") or []):
        print(line)


def _print_summary(summary: list[tuple[dt.date, dict]]) -> None:
    if not summary:
        return
    print(f"\n{'date':<12}{'starts':>10}{'amount':>16}{'read':>12}{'quarantined':>13}")
    for day, done in summary:
        amount = f"{done['amount']:.4f}" if done.get("amount") is not None else "-"
        print(f"{day!s:<12}{done['starts_on_day']:>10,}{amount:>16}{done['rows_read']:>12,}"
              f"{done['quarantined']:>13,}")


def _print_unbilled(days: list[tuple[dt.date, str]]) -> None:
    if days:
        print(f"\nnot billed ({len(days)} day(s)):")
        for day, why in days:
            print(f"  {day}  {why}")


def cmd_restate(args: argparse.Namespace) -> None:
    if not args.dry_run:
        auditor.start()  # Great Expectations warms up in its own process, first (cmd_run)
    from billing_jobs.restate import last_landed_day, restate, stale_reasons, unbilled_days

    settings = _settings(args, source=True)
    if args.dry_run:
        days = stale_reasons(settings, args.since)
        print("would re-bill: " + (", ".join(f"{d} ({why})" for d, why in sorted(days.items()))
                                   if days else "nothing"))
    else:
        _say_secret(settings)
        done = restate(settings, args.since)
        for day, result in done:
            print(f"{day}: re-billed: {result['starts_on_day']:,} starts, amount "
                  f"{result['amount']:.4f} (run {result['run_id']}; {result['why']})")
            _print_adjustments(result)
        if not done:
            print(f"no published day since {args.since} has changed inputs")
    last = last_landed_day(settings)
    unbilled = unbilled_days(settings, args.since, last) if last and last >= args.since else []
    if unbilled:
        _print_unbilled(unbilled)
        print("restatement re-bills published days only: bill these with `billing-jobs run`")
    else:
        print(f"every day from {args.since} to {last or args.since} is published")


def cmd_reconcile_provider(args: argparse.Namespace) -> None:
    auditor.start()  # Great Expectations warms up in its own process, first (cmd_run)
    from billing_jobs.provider_reconcile import reconcile_day

    days = _days(args)
    settings = _settings(args, source=True)
    settings.check_expectations()
    _say_secret(settings)
    for day in days:
        try:
            c = reconcile_day(settings, day, args.tolerance_minutes)
        except BillingError as exc:
            raise BillingError(f"{day}: {one_line(exc)} (nothing published for {day})") from exc
        print(f"{day}: our starts {c['our_starts']:,}: matched {c['matched']:,}, type mismatch "
              f"{c['type_mismatch']:,}, ours only {c['ours_only']:,}; WhatsApp only "
              f"{c['provider_only']:,}; provider rows {c['rows_read']:,} read, "
              f"{c['quarantined']:,} quarantined (run {c['run_id']})", flush=True)


def _month(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text + "-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a month (YYYY-MM): {text!r}") from None


def cmd_close(args: argparse.Namespace) -> None:
    from billing_jobs.invoicing import close_month

    invoices = close_month(_settings(args), args.month)
    if not invoices:
        print(f"{args.month:%Y-%m} is already closed: nothing changed")
    for inv in invoices:
        print(f"invoice {inv['invoice_number']}: {inv['customer_id']} {inv['currency']} "
              f"{inv['total']} ({inv['items']} items, exact {inv['exact_total']})")


def cmd_trace(args: argparse.Namespace) -> None:
    from billing_jobs.invoicing import trace

    rows = trace(_settings(args), args.invoice, args.item)
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
    from billing_jobs.invoicing import export_month

    paths = export_month(_settings(args), args.month, Path(args.out), args.customer)
    if not paths:
        raise UsageError(f"no issued invoices for {args.month:%Y-%m}"
                         + (f" and customer {args.customer}" if args.customer else ""))
    for path in paths:
        print(path)


def cmd_warehouse_upgrade(args: argparse.Namespace) -> None:
    from billing_jobs import migrate, warehouse

    settings = _settings(args)
    engine = warehouse.create_engine(settings.warehouse_url)
    try:
        with warehouse.connect(engine, settings.lock_wait_s) as conn:
            before, after = migrate.upgrade(conn, settings.schema, settings.lock_wait_s)
    finally:
        engine.dispose()
    if before == after:
        print(f"warehouse schema {settings.schema} is at revision {after}: nothing to do")
    else:
        print(f"warehouse schema {settings.schema} upgraded from "
              f"{'an empty warehouse' if before is None else 'revision ' + before} to {after}")


def cmd_warehouse_grant_finance(args: argparse.Namespace) -> None:
    from billing_jobs import migrate, warehouse

    settings = _settings(args)
    with migrate.writing(settings, f"granting {args.role} read access") as conn:
        warehouse.grant_finance(conn, settings.schema, args.role)
    print(f"{args.role}: may read schema {settings.schema} (SELECT only, tables made later too); "
          f"grant it to people with: grant {args.role} to <user>;")


def cmd_prune_staging(args: argparse.Namespace) -> None:
    from billing_jobs.config import Settings
    from billing_jobs.staging import prune

    settings = Settings.resolve(staging=args.staging, staging_keep_days=args.keep_days)
    if settings.staging_keep_days < 1:
        raise UsageError(f"--keep-days must be at least 1, got {settings.staging_keep_days:g}")
    removed = prune(settings.staging, settings.staging_keep_days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for run in removed:
        when = "started" if run.kind == "run" else "last used"
        print(f"{verb} {run.folder} ({when} {run.started_at:%Y-%m-%d %H:%M} UTC, "
              f"{run.bytes / 2**20:,.1f} MiB)")
    runs = [r for r in removed if r.kind == "run"]
    pieces = [r for r in removed if r.kind != "run"]
    print(f"{verb} {len(runs)} staged run(s) older than {settings.staging_keep_days:g} days, "
          f"{sum(r.bytes for r in runs) / 2**20:,.1f} MiB")
    if pieces:
        print(f"{verb} the prepared pieces of {len(pieces)} file(s) unused for as long, "
              f"{sum(r.bytes for r in pieces) / 2**20:,.1f} MiB")


def cmd_audit_docs(args: argparse.Namespace) -> None:
    from billing_jobs.audit import build_docs
    from billing_jobs.config import Settings

    settings = Settings.resolve()
    root = settings.gx_project
    if not root.exists():
        raise UsageError(f"no audit results under {root}: run a day first")
    print(f"Data Docs: {build_docs(root, settings.suites)}")


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


WAREHOUSE_HELP = ("SQLAlchemy URL of the warehouse (default $BILLING_WAREHOUSE_URL, else "
                  "duckdb:///var/warehouse.duckdb); PostgreSQL: postgresql+psycopg://USER@HOST/DB")
SOURCE_HELP = "landing zone, a folder or fsspec URL (default $BILLING_SOURCE, else var/landing)"
REFERENCE_HELP = "reference CSVs (default $BILLING_REFERENCE, else <source>/reference)"


def parser() -> argparse.ArgumentParser:
    from billing_jobs.run_folder import code_version

    p = OneLineParser(prog="billing-jobs", description=__doc__.split(".")[0] + ".")
    p.add_argument("--version", action="version", version=f"billing-jobs {code_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=OneLineParser)

    g = sub.add_parser("generate", help="write a synthetic landing zone and reference set")
    g.add_argument("--out", required=True, help="directory to write messages/ and reference/ into")
    g.add_argument("--start", required=True, type=_date, help="first day, YYYY-MM-DD")
    g.add_argument("--days", required=True, type=_positive, help="how many days of traffic")
    g.add_argument("--messages-per-day", required=True, type=_positive,
                   help="messages per day (before duplicates and bad rows)")
    g.add_argument("--seed", type=int, default=7, help="same seed, same files (default 7)")
    g.add_argument("--format", choices=["parquet", "csv", "jsonl", "mixed"], default="parquet",
                   help="file format of the message files (mixed: round robin per day)")
    g.add_argument("--no-provider", action="store_true",
                   help="write no provider_conversations/ (WhatsApp's side of the bill)")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("reconcile", help="pure rules: message files in, conversation starts out")
    r.add_argument("--messages", required=True, nargs="+", metavar="PATH",
                   help="message files or directories (parquet, csv, jsonl)")
    r.add_argument("--out", required=True, metavar="FILE", help="starts, .parquet or .csv")
    r.add_argument("--anomalies", metavar="FILE", help="outside-session anomalies, .parquet or .csv")
    r.set_defaults(func=cmd_reconcile)

    u = sub.add_parser("run", help="the daily pipeline: write, audit, publish one date or a range")
    u.add_argument("--date", required=True, type=_date, help="billing date, YYYY-MM-DD (UTC)")
    u.add_argument("--to", type=_date, help="last billing date of an inclusive range; the range "
                                            "stops at the first failed day")
    u.add_argument("--source", help=SOURCE_HELP)
    u.add_argument("--reference", help=REFERENCE_HELP)
    u.add_argument("--warehouse", help=WAREHOUSE_HELP)
    u.add_argument("--dry-run", action="store_true", help="write and audit, publish nothing")
    u.add_argument("--shards", type=_positive, default=None,
                   help="compute the day in N pieces by line (bounded memory; same result); "
                        "default: one per $BILLING_ROWS_PER_SHARD (4M) rows of D-2..D")
    u.set_defaults(func=cmd_run)

    s = sub.add_parser("restate", help="re-bill published days whose input partitions changed")
    s.add_argument("--since", required=True, type=_date, help="first billing date to check")
    s.add_argument("--source", help=SOURCE_HELP)
    s.add_argument("--reference", help=REFERENCE_HELP)
    s.add_argument("--warehouse", help=WAREHOUSE_HELP)
    s.add_argument("--dry-run", action="store_true", help="only list the days to re-bill")
    s.set_defaults(func=cmd_restate)

    v = sub.add_parser("reconcile-provider",
                       help="WhatsApp's conversations against our published starts, per day")
    v.add_argument("--date", required=True, type=_date, help="billing date, YYYY-MM-DD (UTC)")
    v.add_argument("--to", type=_date, help="last billing date of an inclusive range")
    v.add_argument("--source", help=SOURCE_HELP)
    v.add_argument("--reference", help=REFERENCE_HELP)
    v.add_argument("--warehouse", help=WAREHOUSE_HELP)
    v.add_argument("--tolerance-minutes", type=_positive, default=10,
                   help="how long after a template WhatsApp may open its conversation (default 10)")
    v.set_defaults(func=cmd_reconcile_provider)

    c = sub.add_parser("close", help="issue the month's invoices (idempotent)")
    c.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    c.add_argument("--warehouse", help=WAREHOUSE_HELP)
    c.set_defaults(func=cmd_close)

    t = sub.add_parser("trace", help="the conversation starts behind an invoice or invoice item")
    t.add_argument("--invoice", required=True, type=_number, help="invoice number")
    t.add_argument("--item", type=_number, help="item number on that invoice (default: all)")
    t.add_argument("--warehouse", help=WAREHOUSE_HELP)
    t.set_defaults(func=cmd_trace)

    x = sub.add_parser("export", help="one CSV per issued invoice of a month")
    x.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    x.add_argument("--customer", help="only this customer's invoices")
    x.add_argument("--out", required=True, help="directory to write the invoice files into")
    x.add_argument("--warehouse", help=WAREHOUSE_HELP)
    x.set_defaults(func=cmd_export)

    w = sub.add_parser("warehouse", help="the warehouse's schema and roles")
    wsub = w.add_subparsers(dest="action", required=True, metavar="ACTION",
                            parser_class=OneLineParser, help="upgrade or grant-finance")
    wu = wsub.add_parser("upgrade", help="apply the schema migrations the warehouse lacks "
                                         "(runs do it too when the warehouse is behind)")
    wu.add_argument("--warehouse", help=WAREHOUSE_HELP)
    wu.set_defaults(func=cmd_warehouse_upgrade)
    wg = wsub.add_parser("grant-finance", help="PostgreSQL: let ROLE read the billing schema, "
                                               "nothing else")
    wg.add_argument("--role", required=True, help="role to create or update, e.g. "
                                                  "billing_finance")
    wg.add_argument("--warehouse", help=WAREHOUSE_HELP)
    wg.set_defaults(func=cmd_warehouse_grant_finance)

    g = sub.add_parser("prune-staging", help="remove staged runs older than --keep-days")
    g.add_argument("--keep-days", help="default: BILLING_STAGING_KEEP_DAYS, else 14")
    g.add_argument("--staging", help="default: BILLING_STAGING, else var/staging")
    g.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    g.set_defaults(func=cmd_prune_staging)

    a = sub.add_parser("audit-docs", help="build Great Expectations Data Docs from kept results")
    a.set_defaults(func=cmd_audit_docs)

    e = sub.add_parser("explain", help="one stream's timeline with the decision for each message")
    e.add_argument("--line", required=True, help="line_id")
    e.add_argument("--contact", required=True,
                   help="the contact's number in any spelling (+49 151..., 0049..., 49151...)")
    e.add_argument("--date", type=_date, help="read the landing zone for this billing date, "
                                              "with its two days of history")
    e.add_argument("--to", type=_date, help="last date of an inclusive range (with --date)")
    e.add_argument("--messages", nargs="+", metavar="PATH",
                   help="instead of --date: message files or directories (parquet, csv, jsonl)")
    e.add_argument("--source", help=SOURCE_HELP)
    e.add_argument("--reference", help=REFERENCE_HELP)
    e.add_argument("--warehouse", help="with a warehouse, each charge names its invoice "
                                       "(default $BILLING_WAREHOUSE_URL when set)")
    e.add_argument("--format", choices=["text", "csv", "json"], default="text",
                   help="text fits 120 columns; csv and json carry every field in full")
    e.set_defaults(func=cmd_explain)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one redacted line on stderr and a non-zero exit."""
    args = parser().parse_args(argv)
    name = f"billing-jobs {args.command}"
    try:
        args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `billing-jobs explain … | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BillingError as exc:
        print(f"{name}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the contract: one line, never a traceback
        if type(exc).__module__.startswith("sqlalchemy"):  # what the database said, e.g. rights
            print(f"{name}: error: the warehouse refused: {one_line(exc)}", file=sys.stderr)
            return 1
        if os.environ.get("BILLING_DEBUG"):
            raise
        print(f"{name}: error: {one_line(exc)} (unexpected; BILLING_DEBUG=1 shows the "
              f"traceback)", file=sys.stderr)
        return 2
    finally:
        auditor.stop()  # Great Expectations' worker, if the command started one
    return 0


if __name__ == "__main__":
    sys.exit(main())
