"""Run a finance query from `sql/queries/` against the warehouse and print it as a table (used by
`make demo` and the README): `python -m billing_jobs.summary QUERY_NAME [WAREHOUSE_URL]`."""

from __future__ import annotations

import sys

import sqlalchemy as sa

from billing_jobs import warehouse
from billing_jobs.cli import OneLineParser
from billing_jobs.config import Settings
from billing_jobs.errors import BillingError, UsageError, one_line


def queries() -> list[str]:
    return sorted(p.stem for p in (warehouse.SQL_DIR / "queries").glob("*.sql"))


def run_query(name: str, settings: Settings) -> tuple[list[str], list[tuple]]:
    path = warehouse.SQL_DIR / "queries" / f"{name}.sql"
    if not path.is_file():
        raise UsageError(f"no query {name!r}; one of: {', '.join(queries())}")
    sql = warehouse.sql_file(path, settings.schema)
    engine = warehouse.create_engine(settings.warehouse_url)
    with warehouse.connect(engine, settings.lock_wait_s) as conn:
        result = conn.execute(sa.text(sql))
        columns, rows = list(result.keys()), [tuple(r) for r in result.all()]
    engine.dispose()
    return columns, rows


def render(columns: list[str], rows: list[tuple]) -> str:
    cells = [columns] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m billing_jobs.summary",
                      description="Print a finance query of sql/queries/ as a table.")
    p.add_argument("query", help=f"one of: {', '.join(queries())}")
    p.add_argument("warehouse", nargs="?", help="SQLAlchemy URL (default $BILLING_WAREHOUSE_URL)")
    args = p.parse_args(argv)
    try:
        settings = Settings.resolve(warehouse_url=args.warehouse)
        settings.check_warehouse()
        table = render(*run_query(args.query, settings))
    except BillingError as exc:
        print(f"summary: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as exc:
        print(f"summary: error: the warehouse refused: {one_line(exc)}", file=sys.stderr)
        return 1
    print(f"\n{args.query}:")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
