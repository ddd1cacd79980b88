"""Registering aefsql on many cursors from threads while other cursors read through DuckDB's
fsspec filesystem, as dbt does with --threads. Each registration used to unregister and
re-register the filesystem under the running reads, which crashed DuckDB (SIGSEGV): the work
runs in a child process, so that a crash fails this test instead of killing pytest."""

import json
import subprocess
import sys
import threading

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tile_points

import aefsql
from aefsql.duck.registration import install
from aefsql.duck.udfs import SessionUdfs
from aefsql.session import open_session

THREADS, ROUNDS = 4, 3


def queries(catalog: str, points: str) -> list[str]:
    """Queries on which DuckDB reads the catalog and the points file through its registered
    filesystem, and aefsql the COGs through its own."""
    return [
        "SELECT count(*) FROM aef_index()",
        f"SELECT count(*) FROM read_parquet('{catalog}')",
        f"SELECT lon, lat, year, A00, A63 FROM aef_sample_points('{points}',"
        " years := [2023, 2024]) ORDER BY ALL",
    ]


def answer(cur, sqls: list[str]) -> str:
    return json.dumps([[list(row) for row in cur.execute(sql).fetchall()] for sql in sqls])


def hammer(catalog: str, storage_options: dict, points: str) -> dict:
    """THREADS threads, each ROUNDS times: take a new cursor, register aefsql on it (odd
    threads: a registration of their own; even ones: the parent's session installed again),
    and run the queries on it while the other threads register and read. Returns the
    distinct answers and the errors."""
    con = duckdb.connect()
    # Installed on the parent connection first, as the dbt plugin does: a Python UDF is freed
    # with the cursor that created it, so a shared session's UDFs must not belong to a cursor.
    shared = SessionUdfs(open_session(catalog, storage_options=storage_options))
    install(con, shared)
    answers, errors = set(), []

    def work(k: int) -> None:
        for _ in range(ROUNDS):
            cur = con.cursor()
            try:
                if k % 2:
                    aefsql.register(cur, catalog=catalog, storage_options=storage_options)
                else:
                    install(cur, shared)
                answers.add(answer(cur, queries(catalog, points)))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                cur.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    con.close()  # before exit: an open connection holding UDFs prints "leaked" lines
    return {"answers": sorted(answers), "errors": errors}


@pytest.fixture(scope="module")
def points_file(tmp_path_factory, gdal_collection):
    """A points parquet in a folder beside the collection's, so that the HTTP server (which
    serves their parent) serves it too."""
    lon, lat, _, _ = tile_points(1, 8, seed=3)
    path = tmp_path_factory.mktemp("threads") / "points.parquet"
    assert path.parent.parent == gdal_collection.folder.parent
    pq.write_table(pa.table({"lon": lon, "lat": lat}), path)
    return path


def served_points(kind: str, points_file, request) -> str:
    """The points file's URL on the http or s3 server."""
    if kind == "http":
        base = request.getfixturevalue("http_server").base_url
        return f"{base}{points_file.parent.name}/{points_file.name}"
    request.getfixturevalue("s3").client().upload_file(str(points_file), "aef", "points.parquet")
    return "s3://aef/points.parquet"


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_registering_from_threads_while_others_read(kind, request, points_file, gdal_collection):
    collection = request.getfixturevalue(f"{kind}_collection")
    points = served_points(kind, points_file, request)
    con = aefsql.connect(catalog=gdal_collection.index)  # the same files, read locally
    try:
        expected = answer(con, queries(gdal_collection.index, str(points_file)))
    finally:
        con.close()

    arguments = [collection.index, collection.storage_options, points]
    child = subprocess.run(  # faulthandler: a crash prints every thread's Python stack
        [sys.executable, "-X", "faulthandler", __file__, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # A negative code is the signal that killed it: -11 is SIGSEGV.
    assert child.returncode == 0, f"exit {child.returncode}: {child.stderr[-3000:]}"
    outcome = json.loads(child.stdout)
    assert outcome["errors"] == []
    assert outcome["answers"] == [expected]


if __name__ == "__main__":
    print(json.dumps(hammer(*json.loads(sys.argv[1]))))
