"""Peak memory of aef_grid with about as many cells as pixels: 10 m squares over the whole
world of the demo collection (`aefsql demo`'s, written if absent: 1.17 M pixels of 2024, so
1.17 M cells), in a fresh process.

    python benchmarks/bench_grid_memory.py [--cell 10]

Prints the peak RSS before the query (imports, connection) and after, and the bytes per
cell-year this implies, the figure budgets.GRID_BYTES is set by.
"""

from __future__ import annotations

import argparse

from demo_index import demo_index, measured

import aefsql


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="10")
    args = parser.parse_args()
    con = aefsql.connect(catalog=str(demo_index()))
    (cells,), seconds, before, after = measured(
        con,
        f"SELECT count(*) FROM aef_grid([-180, -90, 180, 90], cell := {args.cell}, "
        "years := 2024, max_bytes := 8000000000)",
    )
    print(
        f"{cells:,} cells in {seconds:.1f} s: peak RSS {before:,.0f} MiB before, {after:,.0f} "
        f"MiB after, {(after - before) * 1024 / cells:,.2f} KiB a cell-year"
    )


if __name__ == "__main__":
    main()
