"""Print conversation starts per customer and type from a starts file (used by `make demo`)."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq


def main(path: str) -> None:
    starts = pq.read_table(path)
    counts = starts.group_by(["customer_id", "conversation_type"]).aggregate(
        [("message_id", "count")]
    ).sort_by([("customer_id", "ascending"), ("conversation_type", "ascending")])
    print(f"\n{'customer':<10} {'conversation type':<20} {'starts':>8}")
    for row in counts.to_pylist():
        print(f"{row['customer_id']:<10} {row['conversation_type']:<20} {row['message_id_count']:>8,}")
    print(f"{'total':<31} {starts.num_rows:>8,}")


if __name__ == "__main__":
    main(sys.argv[1])
