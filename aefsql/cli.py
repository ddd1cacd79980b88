"""The `aefsql` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pyarrow as pa

from .demo import DEMO_POINTS, write_demo_collection
from .duck import connect
from .errors import AefsqlError

# The demo's queries: (what it shows, SQL). The first is the canonical join of the README.
DEMO_QUERIES = [
    (
        "the canonical join: points x catalog -> A00..A63",
        """\
SELECT p.name, i.year, i.utm_zone, unnest(aef_sample(i.path, p.lon, p.lat))
FROM demo_points p
JOIN aef_index() i ON i.year = 2024 AND i.path = aef_locate(p.lon, p.lat, 2024)
ORDER BY p.name""",
    ),
    (
        "every point, every year (NULL bands: outside coverage or nodata)",
        """\
SELECT name, year, A00, A01, A02, A63
FROM aef_sample_points('demo_points', years := [2023, 2024],
                       bands := ['A00', 'A01', 'A02', 'A63'])""",
    ),
    (
        "the most similar pairs of places (cosine of de-quantized embeddings)",
        """\
WITH e AS (SELECT name, aef_vector(aef_embedding(lon, lat, 2024)) AS v FROM demo_points)
SELECT a.name AS a, b.name AS b, round(array_cosine_similarity(a.v, b.v), 3) AS cosine
FROM e a JOIN e b ON a.name < b.name
WHERE a.v IS NOT NULL AND b.v IS NOT NULL
ORDER BY cosine DESC LIMIT 5""",
    ),
]


def default_demo_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "aefsql" / "demo"


def run_demo(folder: Path, out=None) -> None:
    """Write the demo collection, register it as the catalog and run the canonical join."""
    out = out or sys.stdout
    index = write_demo_collection(folder)
    print(f"demo collection: {index}", file=out)
    con = connect(catalog=str(index))
    try:
        names, lons, lats = zip(*DEMO_POINTS, strict=True)
        con.register("demo_points", pa.table({"name": names, "lon": lons, "lat": lats}))
        tiles = con.execute("SELECT count(*), min(year), max(year) FROM aef_index()").fetchall()[0]
        print(f"{tiles[0]} tiles, years {tiles[1]}-{tiles[2]}\n", file=out)
        for title, sql in DEMO_QUERIES:
            print(f"-- {title}\n{sql};", file=out)
            print(con.sql(sql), file=out)
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aefsql", description="AlphaEarth Foundations embeddings, queryable from SQL."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="write a small AEF-format collection and run the canonical join on it"
    )
    demo.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"where to write the collection (default {default_demo_dir()})",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            run_demo(args.dir or default_demo_dir())
    except AefsqlError as exc:
        print(f"aefsql: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
