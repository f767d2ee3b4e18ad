"""Rows per second into a DuckDB file (the example config's warehouse) through relay's writer,
against DuckDB's own ways of inserting the same rows, in one run (about 10 s).

    .venv/bin/python bench/warehouse_duckdb.py [--rows N] [--batch B] [--rounds R]

The rows are the PostgreSQL bench's (bench/warehouse.py): Flagright-shaped events mapped by
relay's own mapper, 8 columns of all six types, written in batches of B into a fresh table
with `UNIQUE (event_id)` in a fresh file under a temporary directory:

- plain:       one `INSERT INTO t SELECT unnest(?), ...` per batch (a list per column), no
               ON CONFLICT, one connection kept open: the baseline.
- relay:       DuckdbWriter.write per batch: the file opened and closed per batch (so others
               can read it between batches), a column check, then the same INSERT with
               `ON CONFLICT (event_id) DO NOTHING`.
- executemany: `executemany("INSERT ... VALUES (?, ...) ON CONFLICT DO NOTHING")` per batch, as
               relay wrote before: DuckDB runs one statement per row. Fewer rows (it is slow).

Every path must leave exactly its rows with distinct keys, or the bench fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb
import uvloop
from warehouse import COLUMNS, build_target, chunks, make_events

from relay.warehouse.duckdb import DUCKDB_TYPES, DuckdbWriter
from relay.warehouse.rows import Row

EXECUTEMANY_ROWS = 2_000


def ddl(table: str) -> str:
    columns = ", ".join(f'"{n}" {DUCKDB_TYPES[t]}' for n, (_, t) in COLUMNS.items())
    return f'CREATE TABLE "{table}" ({columns}, UNIQUE ("event_id"))'


def unnest_select() -> str:
    parts = []
    for _, kind in COLUMNS.values():
        parts.append(
            "unnest(?::VARCHAR[])::JSON"
            if kind == "jsonb"
            else f"unnest(?::{DUCKDB_TYPES[kind]}[])"
        )
    return "SELECT " + ", ".join(parts)


def run_plain(path: Path, batches: Sequence[Sequence[Row]]) -> float:
    connection = duckdb.connect(str(path))
    try:
        connection.execute(ddl("t"))
        started = time.perf_counter()
        for batch in batches:
            columns = [list(c) for c in zip(*batch, strict=True)]
            connection.execute(f"INSERT INTO t {unnest_select()}", columns)
        return time.perf_counter() - started
    finally:
        connection.close()


def run_executemany(path: Path, batches: Sequence[Sequence[Row]]) -> float:
    connection = duckdb.connect(str(path))
    marks = ", ".join("?" for _ in COLUMNS)
    try:
        connection.execute(ddl("t"))
        started = time.perf_counter()
        for batch in batches:
            connection.execute("BEGIN TRANSACTION")
            connection.executemany(
                f'INSERT INTO t VALUES ({marks}) ON CONFLICT ("event_id") DO NOTHING',
                [list(row) for row in batch],
            )
            connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()


def run_relay(path: Path, batches: Sequence[Sequence[Row]]) -> float:
    columns = [(name, kind) for name, (_, kind) in COLUMNS.items()]
    writer = DuckdbWriter(path, "t", columns, ["event_id"], create_table=False)
    connection = duckdb.connect(str(path))
    connection.execute(ddl("t"))
    connection.close()

    async def write_all() -> float:
        started = time.perf_counter()
        for batch in batches:
            results = await writer.write([[row] for row in batch])
            if any(r is not None for r in results):
                raise SystemExit(f"PROBLEM: relay's writer failed rows: {results[:3]}")
        return time.perf_counter() - started

    return uvloop.run(write_all())


def check(path: Path, expected: int, what: str) -> None:
    connection = duckdb.connect(str(path), read_only=True)
    try:
        ((total, distinct),) = connection.execute(
            'SELECT count(*), count(DISTINCT "event_id") FROM t'
        ).fetchall()
    finally:
        connection.close()
    if (total, distinct) != (expected, expected):
        raise SystemExit(f"PROBLEM: {what} left {total} rows, {distinct} keys, not {expected}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="relay-bench-duckdb-") as scratch:
        mapper = build_target("postgresql://unused", "t", args.batch, Path(scratch)).mapper
        rows = [row for event in make_events(args.rows) for row in mapper.rows_for(event)]
        batches = chunks(rows, args.batch)
        few = chunks(rows[:EXECUTEMANY_ROWS], args.batch)
        paths: dict[str, tuple[Callable[[Path, Sequence[Sequence[Row]]], float], list]] = {
            "plain": (run_plain, batches),
            "relay": (run_relay, batches),
            "executemany": (run_executemany, few),
        }
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for round_no in range(1, args.rounds + 1):
            for name, (run, data) in paths.items():
                path = Path(scratch) / f"{name}-{round_no}.duckdb"
                count = sum(len(b) for b in data)
                seconds = run(path, data)
                check(path, count, name)
                rates[name].append(count / seconds)
            print(f"round {round_no}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()))
    base = statistics.median(rates["plain"])
    print(f"\nDuckDB {duckdb.__version__}; Python {sys.version.split()[0]}; rows/s, medians")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:<12} {median:>9,.0f}  {median / base:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
