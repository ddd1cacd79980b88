"""The AEF index catalog: which columns play which role, the SQL over it, and the tile table."""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import shutil
import tempfile
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import geo
from .errors import CatalogError, RangeReadError
from .io import ByteStore, connection_failure, protocol_of, redact, redacted_text

PUBLIC_CATALOG = "s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/aef_index.parquet"
# Source Cooperative serves the public bucket to anonymous, unsigned requests only.
PUBLIC_STORAGE_OPTIONS = {"anon": True, "client_kwargs": {"region_name": "us-west-2"}}

_URL_WITH_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class CatalogColumns:
    """The source column playing each role; None where the catalog has none."""

    year: str
    path: str
    wgs84_west: str
    wgs84_south: str
    wgs84_east: str
    wgs84_north: str
    fid: str | None = None
    crs: str | None = None
    utm_zone: str | None = None
    utm_west: str | None = None
    utm_south: str | None = None
    utm_east: str | None = None
    utm_north: str | None = None
    geom: str | None = None


# Candidate source names per role, first match wins.
ROLE_NAMES = {
    "fid": ("fid", "id"),
    "year": ("year",),
    "path": ("path", "href", "url"),
    "crs": ("crs",),
    "utm_zone": ("utm_zone",),
    "wgs84_west": ("wgs84_west", "west", "xmin"),
    "wgs84_south": ("wgs84_south", "south", "ymin"),
    "wgs84_east": ("wgs84_east", "east", "xmax"),
    "wgs84_north": ("wgs84_north", "north", "ymax"),
    "utm_west": ("utm_west",),
    "utm_south": ("utm_south",),
    "utm_east": ("utm_east",),
    "utm_north": ("utm_north",),
    "geom": ("geom", "geometry"),
}
REQUIRED_ROLES = ("year", "path", "wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")

# The published index's schema: the default catalog registers without a network round trip.
PUBLIC_COLUMNS = CatalogColumns(**{role: names[0] for role, names in ROLE_NAMES.items()})


def columns_from_names(names: list[str], source: str) -> CatalogColumns:
    """Map a catalog's column names to roles; CatalogError naming what is missing."""
    present = set(names)
    chosen = {}
    for role, candidates in ROLE_NAMES.items():
        chosen[role] = next((c for c in candidates if c in present), None)
    missing = [role for role in REQUIRED_ROLES if chosen[role] is None]
    if missing:
        raise CatalogError(
            f"{source}: the catalog lacks required column(s) "
            + ", ".join(f"{role} (one of {', '.join(ROLE_NAMES[role])})" for role in missing)
            + f"; it has: {', '.join(names)}"
        )
    return CatalogColumns(**chosen)


def catalog_base(url: str) -> str:
    """The folder relative `path` values resolve against, with a trailing slash."""
    if _URL_WITH_SCHEME.match(url) and not url.startswith("file://"):
        return url.rsplit("/", 1)[0] + "/"
    local = url.removeprefix("file://")
    return os.path.dirname(os.path.abspath(local)) + "/"


def resolve_path(path: str | None, base: str) -> str | None:
    if path is None or _URL_WITH_SCHEME.match(path) or path.startswith("/"):
        return path
    return base + path.removeprefix("./")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class TileTable:
    """The narrow catalog in numpy arrays, for locating points' tiles."""

    year: np.ndarray  # int64
    path: np.ndarray  # object (absolute URLs)
    utm_zone: np.ndarray  # object, '33N'
    west: np.ndarray
    south: np.ndarray
    east: np.ndarray
    north: np.ndarray
    _grid: dict | None = None

    def box_holds(self, t: int, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """True where (lon, lat) lies in tile t's lon/lat box (which may cross the
        antimeridian, stored with west > east)."""
        west, east = self.west[t], self.east[t]
        in_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
        return in_lon & (lat >= self.south[t]) & (lat <= self.north[t])

    def candidates(self, year: int, cell_lon: int, cell_lat: int) -> np.ndarray:
        """Indices of tiles of `year` whose lon/lat box touches the 1-degree cell."""
        if self._grid is None:
            self._grid = _grid_index(self)
        return self._grid.get((year, cell_lon, cell_lat), _NO_TILES)


_NO_TILES = np.zeros(0, dtype=np.int64)


def _grid_index(tiles: TileTable) -> dict:
    cells: dict[tuple[int, int, int], list[int]] = {}
    for i in range(tiles.year.size):
        west, east = tiles.west[i], tiles.east[i]
        # A box crossing the antimeridian is stored with west > east.
        spans = [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]
        for lo, hi in spans:
            for cx in range(int(np.floor(lo)), int(np.floor(hi)) + 1):
                for cy in range(int(np.floor(tiles.south[i])), int(np.floor(tiles.north[i])) + 1):
                    cells.setdefault((int(tiles.year[i]), cx, cy), []).append(i)
    return {key: np.asarray(value, dtype=np.int64) for key, value in cells.items()}


# The normalized catalog aef_index() reads: one schema whatever the source's column names.
INDEX_SCHEMA = pa.schema(
    [
        ("fid", pa.int64()),
        ("year", pa.int32()),
        ("path", pa.string()),
        ("crs", pa.string()),
        ("utm_zone", pa.string()),
        *(
            (name, pa.float64())
            for name in (
                "wgs84_west",
                "wgs84_south",
                "wgs84_east",
                "wgs84_north",
                "utm_west",
                "utm_south",
                "utm_east",
                "utm_north",
            )
        ),
        ("geom", pa.binary()),
    ]
)
# What locating points needs: the narrow part, read without the (large) footprints.
TILE_ROLES = (
    "year",
    "path",
    "crs",
    "utm_zone",
    "wgs84_west",
    "wgs84_south",
    "wgs84_east",
    "wgs84_north",
)


class Catalog:
    """An index parquet (local path or URL), read lazily through the ByteStore.

    Registering reads nothing: the first query that needs the catalog reads and checks it,
    so that connecting (dbt opens many connections) never waits on the network. A local
    catalog is checked at registration all the same (`check`), which costs no request.
    """

    def __init__(self, url: str, store: ByteStore):
        self.url = url
        self.store = store
        self._columns: CatalogColumns | None = None
        self._tiles: TileTable | None = None
        self._index_file: str | None = None
        self._fetched: tuple | None = None  # (version, bytes) of a remote catalog
        self._lock = threading.RLock()

    @property
    def base(self) -> str:
        return catalog_base(self.url)

    @property
    def is_local(self) -> bool:
        return protocol_of(self.url) == "file"

    def _source(self) -> str:
        """Where the parquet is read from: a local copy when the store keeps a disk cache
        (fetched once per version of the index), else the URL itself."""
        cache = self.store.disk_cache
        if cache is None or self.is_local:
            return self.url
        version = self.store.versions([self.url])[self.url]
        return str(cache.whole_file(self.url, version, self._fetch_whole))

    def _fetch_whole(self) -> bytes:
        """The remote catalog's bytes, read once per version (the footer, the tile table and
        the normalized index each need them)."""
        version = self.store.versions([self.url])[self.url]
        if self._fetched is None or self._fetched[0] != version:
            data = self.store.read_file(self.url)
            # The version it was read from (a newer one when it changed while read).
            self._fetched = (self.store.versions([self.url])[self.url], data)
        return self._fetched[1]

    @contextmanager
    def _parquet(self):
        """The catalog as a pyarrow ParquetFile; errors say what went wrong and the way out.
        A remote catalog is read whole through the store (retried, one version), a local
        one in place."""
        url = redact(self.url)
        try:
            source = self._source()
            if protocol_of(source) == "file":
                with self.store.filesystem(source).open(source, "rb") as f:
                    yield pq.ParquetFile(f)
            else:
                yield pq.ParquetFile(pa.BufferReader(self._fetch_whole()))
        except FileNotFoundError as exc:
            failure = connection_failure(exc)
            if failure is not None:
                raise CatalogError(f"cannot reach {url}: {failure}{_WAY_OUT}") from None
            raise CatalogError(f"catalog {url} not found{_WAY_OUT}") from None
        except pa.ArrowInvalid as exc:
            raise CatalogError(f"catalog {url} cannot be read as parquet: {exc}") from None
        except CatalogError:
            raise
        except RangeReadError as exc:  # the disk cache's version check
            raise CatalogError(f"{exc}{_WAY_OUT}") from None
        except Exception as exc:  # noqa: BLE001 (network stacks raise many kinds)
            cause = redacted_text(exc) or type(exc).__name__
            verb = "read" if self.is_local else "reach"
            raise CatalogError(f"cannot {verb} {url}: {cause}{_WAY_OUT}") from None

    @property
    def columns(self) -> CatalogColumns:
        """The column roles, read from the parquet footer on first use."""
        with self._lock:
            if self._columns is None:
                with self._parquet() as parquet:
                    schema = parquet.schema_arrow
                columns = columns_from_names(schema.names, redact(self.url))
                _check_types(schema, columns, redact(self.url))
                self._columns = columns
            return self._columns

    def check(self) -> None:
        """A local catalog is read and checked now, so that a bad one fails at registration:
        its schema (roles, types), ids (no duplicates) and paths (known schemes, none
        escaping the catalog's folder). A remote one is checked on first use."""
        if self.is_local:
            self.index_file()

    def index_file(self) -> str:
        """Path of a local parquet holding the normalized, checked catalog (INDEX_SCHEMA),
        written on first use; aef_index() reads it."""
        with self._lock:
            if self._index_file is None:
                folder = tempfile.mkdtemp(prefix="aefsql-catalog-")
                weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
                target = os.path.join(folder, "index.parquet")
                columns, base, fids = self.columns, self.base, set()
                with self._parquet() as parquet, pq.ParquetWriter(target, INDEX_SCHEMA) as out:
                    offset = 0
                    for batch in parquet.iter_batches(columns=_source_names(columns)):
                        table = normalize(pa.Table.from_batches([batch]), columns, base, offset)
                        _check_fids(table, fids, redact(self.url))
                        out.write_table(table)
                        offset += batch.num_rows
                self._index_file = target
            return self._index_file

    def tiles(self) -> TileTable:
        """The narrow tile table (read once, on first use)."""
        with self._lock:
            if self._tiles is None:
                columns = self.columns
                wanted = _source_names(columns, TILE_ROLES)
                with self._parquet() as parquet:
                    table = parquet.read(columns=wanted)
                table = normalize(table, columns, self.base, 0, TILE_ROLES)
                self._tiles = TileTable(
                    year=table["year"].to_numpy().astype(np.int64),
                    path=np.array(table["path"].to_pylist(), dtype=object),
                    utm_zone=np.array(table["utm_zone"].to_pylist(), dtype=object),
                    **{
                        side: table[f"wgs84_{side}"].to_numpy(zero_copy_only=False)
                        for side in ("west", "south", "east", "north")
                    },
                )
            return self._tiles


@lru_cache(maxsize=1)
def empty_index_file() -> str:
    """A catalog of no row in INDEX_SCHEMA: what aef_index() binds to while it is being
    created (DuckDB binds a table macro at creation; registering must read no catalog)."""
    folder = tempfile.mkdtemp(prefix="aefsql-empty-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "index.parquet")
    pq.write_table(INDEX_SCHEMA.empty_table(), path)
    return path


_WAY_OUT = "; pass --catalog (catalog=…) or run `aefsql demo` for a local one"


def _source_names(columns: CatalogColumns, roles=None) -> list[str]:
    roles = roles or [f.name for f in dataclasses.fields(CatalogColumns)]
    names = [getattr(columns, role) for role in roles]
    return list(dict.fromkeys(n for n in names if n is not None))


def normalize(
    table: pa.Table, columns: CatalogColumns, base: str, row_offset: int, roles=None
) -> pa.Table:
    """A catalog table in INDEX_SCHEMA (or its `roles`): paths absolute, utm_zone from crs
    where the catalog has none, a box footprint where it has no geometry, fid the row
    number where it has none. The one place where the source's names and ways are undone."""
    n = table.num_rows
    schema = INDEX_SCHEMA if roles is None else pa.schema([INDEX_SCHEMA.field(r) for r in roles])

    def source(role: str):
        name = getattr(columns, role)
        if name is None:
            return None
        column = table[name]
        if isinstance(column.type, pa.ExtensionType):  # e.g. geoarrow.wkb
            column = column.cast(column.type.storage_type)
        return column

    def numbers(role: str, arrow_type) -> pa.Array:
        column = source(role)
        if column is None:
            return pa.nulls(n, arrow_type)
        try:
            return column.cast(arrow_type)
        except pa.ArrowException as exc:
            raise CatalogError(f"catalog column {getattr(columns, role)!r}: {exc}") from None

    built = {}
    for field in schema:
        role = field.name
        if role == "fid" and columns.fid is None:
            built[role] = pa.array(np.arange(row_offset + 1, row_offset + n + 1), pa.int64())
        elif role == "path":
            paths = source("path").to_pylist()
            for path in paths:
                _check_path(path, redact(base))
            built[role] = pa.array([resolve_path(p, base) for p in paths], pa.string())
        elif role == "utm_zone" and columns.utm_zone is None:
            crs = source("crs")
            zones = [None] * n if crs is None else [zone_from_crs(c) for c in crs.to_pylist()]
            built[role] = pa.array(zones, pa.string())
        elif role == "geom" and columns.geom is None:
            corners = [
                numbers(f"wgs84_{s}", pa.float64()).to_pylist()
                for s in ("west", "south", "east", "north")
            ]
            built[role] = pa.array(
                [None if None in box else geo.box_wkb(*box) for box in zip(*corners, strict=True)],
                pa.binary(),
            )
        elif role in ("crs", "utm_zone"):
            column = source(role)
            built[role] = pa.nulls(n, pa.string()) if column is None else column.cast(pa.string())
        else:
            built[role] = numbers(role, field.type)
    return pa.table(built, schema=schema)


def _check_fids(table: pa.Table, seen_fids: set, source: str) -> None:
    """No duplicate ids (across batches: `seen_fids` carries them)."""
    fids = table["fid"].to_pylist()
    duplicates = sorted({f for f in fids if f in seen_fids} | _repeated(fids))
    if duplicates:
        raise CatalogError(f"catalog {source}: duplicate fid values {duplicates[:5]}")
    seen_fids.update(fids)


def _repeated(values: list) -> set:
    seen, repeated = set(), set()
    for v in values:
        (repeated if v in seen else seen).add(v)
    return repeated


ALLOWED_SCHEMES = {"s3", "s3a", "gs", "gcs", "http", "https", "file"}


def _check_types(schema: pa.Schema, columns: CatalogColumns, source: str) -> None:
    def need(role: str, test, kind: str) -> None:
        name = getattr(columns, role)
        if name is not None and not test(schema.field(name).type):
            raise CatalogError(
                f"{source}: column {name!r} ({role}) has type {schema.field(name).type}, "
                f"expected {kind}"
            )

    need("year", pa.types.is_integer, "an integer")
    need("path", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "a string")
    for role in ("wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north"):
        need(role, lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "a number")


def _check_path(path: str | None, source: str) -> None:
    """A tile path must be a URL of a known scheme, or relative without leaving the folder."""
    if path is None or not path.strip():
        raise CatalogError(f"{source}: a row has an empty path")
    scheme = _URL_WITH_SCHEME.match(path)
    if scheme and scheme.group(0)[:-3].lower() not in ALLOWED_SCHEMES:
        raise CatalogError(
            f"{source}: path {path!r} has an unexpected scheme; allowed: "
            + ", ".join(sorted(ALLOWED_SCHEMES))
        )
    if not scheme and ".." in path.replace("\\", "/").split("/"):
        raise CatalogError(f"{source}: path {path!r} escapes the catalog's folder")


def zone_from_crs(crs: str | None) -> str | None:
    """'EPSG:32633' -> '33N', 'EPSG:32733' -> '33S'; None for non-UTM CRSs."""
    match = re.fullmatch(r"EPSG:(32[67])(\d\d)", (crs or "").strip(), flags=re.IGNORECASE)
    if not match or not 1 <= int(match.group(2)) <= 60:
        return None
    return f"{int(match.group(2))}{'N' if match.group(1) == '326' else 'S'}"


def storage_options_for(url: str, storage_options: dict) -> dict[str, dict]:
    """Storage options per protocol family: the user's for the catalog's protocol, and
    anonymous access for the public catalog's bucket when the user gives none."""
    family = protocol_of(url)
    options = {family: dict(storage_options)}
    if url == PUBLIC_CATALOG and not storage_options:
        options[family] = dict(PUBLIC_STORAGE_OPTIONS)
    return options
