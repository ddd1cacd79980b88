"""The session: what every host shares over the kernels — the catalog, and the block engine
with its store, headers (their cache and any headers file), block cache and progress line.

The composition root: `open_session` resolves the options (and the `AEFSQL_*` environment)
once and builds them. The hosts — DuckDB (aefsql/duck), the Python API, Spark, torch and
TorchGeo — each open a session and call the kernels (aefsql/kernels) with it; no host
reaches into another for one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .catalog.index import PUBLIC_CATALOG, Catalog, TileTable, storage_options_for
from .errors import CatalogError, RangeReadError
from .headers.rasteret import is_rasteret, open_rasteret
from .headers.table import HeadersFile, headers_to_table
from .kernels import coverage
from .kernels.engine import BlockEngine
from .options import headers_option
from .progress import Progress
from .storage.disk import DiskCache
from .storage.store import DEFAULT_CONCURRENCY, ByteStore, redact


@dataclass(eq=False)
class Session:
    """The catalog and the block engine (store, headers, block cache, progress) that one
    registration, call or dataset shares; safe to use from several threads."""

    catalog: Catalog
    engine: BlockEngine

    def cancel(self) -> None:
        """Stop this session's reads: the running aef_* calls end with `Cancelled`."""
        self.engine.store.cancelled.set()

    def resume(self) -> None:
        self.engine.store.cancelled.clear()

    def use_headers(self, path: str) -> None:
        """Take every file's header from a headers file instead of its COG: aefsql's (a
        Parquet file), or a Rasteret collection (a Parquet file or folder of records, or a
        published collection's index; see aefsql/headers/rasteret.py)."""
        store, headers = self.engine.store, self.engine.headers
        try:
            if not path.rstrip("/").endswith(".parquet"):  # a folder: Rasteret's
                headers.file = open_rasteret(path, store)
                return
            data = store.read_file(path)  # retried, one version
            table = pq.read_table(pa.BufferReader(data))
            if is_rasteret(table.schema) or "source_part" in table.schema.names:
                headers.file = open_rasteret(path, store, table)
            else:
                headers.file = HeadersFile(table)
        except RangeReadError as exc:  # it names the file itself
            raise CatalogError(f"headers file cannot be read: {exc}") from None
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise CatalogError(f"headers file {redact(path)} cannot be read: {exc}") from None

    def headers_table(self, years: tuple[int, ...] | None) -> pa.Table:
        """The headers of the catalog's files (of `years`, default all), one row per file."""
        tiles = self.catalog.tiles()
        chosen = tiles.path if years is None else tiles.path[np.isin(tiles.year, years)]
        return headers_to_table(self.engine.headers.complete(list(dict.fromkeys(chosen))))

    def write_headers(self, target: str, years: tuple[int, ...] | None) -> int:
        """Write the headers file of the catalog's files (of `years`, default all) to
        `target`; return how many files."""
        table = self.headers_table(years)
        with self.engine.store.filesystem(target).open(target, "wb") as f:
            pq.write_table(table, f)
        return table.num_rows

    def missing_years(self, years) -> list[int]:
        """The years the catalog has no tile of."""
        return coverage.missing_years(self.catalog.tiles(), years)


def open_session(
    catalog: str | None = None,
    *,
    cache_dir: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool | Progress | None = False,
    headers: str | None = None,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    tiles: TileTable | None = None,
    environment: bool = True,
) -> Session:
    """The catalog, storage and caches that a host shares (see `aefsql.register` for the
    options). `tiles`: the catalog's tile table, read elsewhere.
    `environment`: take what is not given from $AEFSQL_CATALOG, $AEFSQL_STORAGE_OPTIONS,
    $AEFSQL_CACHE_DIR and $AEFSQL_HEADERS (or its deprecated alias $AEFSQL_COLLECTION); False
    for a copy of a session opened elsewhere (Spark's executors), whose options were
    resolved there."""
    env = os.environ if environment else {}
    url = catalog or env.get("AEFSQL_CATALOG") or PUBLIC_CATALOG
    storage_options = dict(storage_options or {})
    if not storage_options and env.get("AEFSQL_STORAGE_OPTIONS"):
        try:
            storage_options = json.loads(env["AEFSQL_STORAGE_OPTIONS"])
        except json.JSONDecodeError as exc:
            raise CatalogError(f"AEFSQL_STORAGE_OPTIONS is not valid JSON: {exc}") from None
    cache_dir = cache_dir or env.get("AEFSQL_CACHE_DIR")
    store = ByteStore(
        storage_options_for(url, storage_options),
        concurrency=concurrency,
        disk_cache=DiskCache(cache_dir) if cache_dir else None,
    )
    session = Session(
        catalog=Catalog(url, store, allowed_hosts=allowed_hosts, tiles=tiles),
        engine=BlockEngine(
            store,
            progress=progress if isinstance(progress, Progress) else Progress(enabled=progress),
        ),
    )
    headers = (
        headers
        or env.get("AEFSQL_HEADERS")
        or headers_option(None, env.get("AEFSQL_COLLECTION"), "$AEFSQL_COLLECTION")
    )
    if headers:
        session.use_headers(headers)
    session.catalog.check()
    session.engine.headers.zone_of = _zone_lookup(session.catalog)
    return session


def _zone_lookup(catalog: Catalog):
    """url -> the UTM zone label the catalog gives its file (None: none, not a catalog
    file, or the catalog not read: a file named by path, aef_file_embedding's, is read
    without it). The table is built once, on the first lookup after the catalog is read."""
    zones: dict[str, str | None] = {}

    def zone_of(url: str) -> str | None:
        if not zones:
            tiles = catalog.tiles_read()
            if tiles is None:
                return None
            zones.update(zip(tiles.path.tolist(), tiles.utm_zone.tolist(), strict=True))
            zones.setdefault("", None)  # built (an empty catalog has no file)
        return zones.get(url)

    return zone_of
