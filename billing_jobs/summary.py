"""Run a finance query from `sql/queries/` against the warehouse and print it as a table (used by
`make demo` and the README): `python -m billing_jobs.summary QUERY_NAME [WAREHOUSE_URL]`."""

from __future__ import annotations

import sys

import sqlalchemy as sa

from billing_jobs import warehouse
from billing_jobs.config import Settings


def run_query(name: str, settings: Settings) -> tuple[list[str], list[tuple]]:
    sql = warehouse.sql_file(warehouse.SQL_DIR / "queries" / f"{name}.sql", settings.schema)
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


def main(argv: list[str]) -> None:
    settings = Settings.resolve(warehouse_url=argv[1] if len(argv) > 1 else None)
    print(f"\n{argv[0]}:")
    print(render(*run_query(argv[0], settings)))


if __name__ == "__main__":
    main(sys.argv[1:])
