"""The fsspec filesystems registered on a DuckDB connection, so that DuckDB's own readers
(read_parquet of the catalog, of points files) reach storage with the store's options."""

from __future__ import annotations

import datetime

import fsspec
from fsspec.implementations.http import HTTPFileSystem

from ..storage.store import ByteStore, http_options, protocol_of


class _HTTPForDuckDB(HTTPFileSystem):
    """fsspec's HTTP filesystem as DuckDB wants it: `modified()` (DuckDB asks, fsspec's HTTP
    filesystem does not answer) and one protocol per instance (DuckDB registers only the
    first)."""

    protocol = ("http",)

    def modified(self, path):
        return datetime.datetime.fromtimestamp(0, tz=datetime.UTC)


class _HTTPSForDuckDB(_HTTPForDuckDB):
    protocol = ("https",)


def duckdb_filesystems(store: ByteStore, url: str) -> list[fsspec.AbstractFileSystem]:
    """Filesystems to register on a DuckDB connection so that its own readers reach `url`'s
    storage with the store's options."""
    family = protocol_of(url)
    options = store.options.get(family, {})
    if family == "http":
        options = http_options(options)
        return [_HTTPForDuckDB(**options), _HTTPSForDuckDB(**options)]
    if family == "file":
        return []
    return [store.filesystem(url)]
