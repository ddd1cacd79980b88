"""The AEF index catalog: which columns play which role, the SQL over it, and the tile table."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import AefsqlError, CatalogError
from .io import ByteStore, protocol_of, redact

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


class Catalog:
    """An index parquet (local path or URL), read lazily through the ByteStore."""

    def __init__(self, url: str, store: ByteStore, columns: CatalogColumns | None = None):
        self.url = url
        self.store = store
        self._columns = columns
        self._tiles: TileTable | None = None
        self._lock = threading.Lock()

    @property
    def base(self) -> str:
        return catalog_base(self.url)

    @property
    def source(self) -> str:
        """Where the parquet is read from: a local copy when the store keeps a disk cache
        (fetched once per version of the index), else the URL itself."""
        cache = self.store.disk_cache
        if cache is None or protocol_of(self.url) == "file":
            return self.url
        try:
            version = self.store.versions([self.url])[self.url]
            return str(cache.whole_file(self.url, version, self._fetch_whole))
        except AefsqlError as exc:
            raise CatalogError(f"catalog {redact(self.url)}: {exc}") from None

    def _fetch_whole(self) -> bytes:
        with self.store.filesystem(self.url).open(self.url, "rb") as f:
            return f.read()

    def _open(self):
        return self.store.filesystem(self.source).open(self.source, "rb")

    @property
    def columns(self) -> CatalogColumns:
        """The column roles, read from the parquet footer on first use."""
        if self._columns is None:
            try:
                with self._open() as f:
                    schema = pq.read_schema(f)
            except FileNotFoundError:
                raise CatalogError(f"catalog {redact(self.url)} not found") from None
            except (OSError, pa.ArrowException, AefsqlError) as exc:
                raise CatalogError(
                    f"catalog {redact(self.url)} cannot be read as parquet: {exc}"
                ) from None
            columns = columns_from_names(schema.names, redact(self.url))
            _check_types(schema, columns, redact(self.url))
            self._columns = columns
        return self._columns

    def check(self) -> None:
        """Validate now, so that a bad catalog fails at registration, not in a query: its
        schema (roles and types) and, for catalogs other than the public one, its ids and
        paths (no duplicate ids, no path escaping the catalog's folder, known schemes only)."""
        columns = self.columns
        if self.url == PUBLIC_CATALOG:
            return  # the published index: registering it must not need the network
        wanted = [c for c in (columns.fid, columns.path) if c]
        try:
            with self._open() as f:
                table = pq.read_table(f, columns=wanted)
        except (OSError, pa.ArrowException) as exc:
            raise CatalogError(f"catalog {redact(self.url)} cannot be read: {exc}") from None
        source = redact(self.url)
        if columns.fid:
            fids = table[columns.fid].to_numpy(zero_copy_only=False)
            unique, counts = np.unique(fids, return_counts=True)
            if (counts > 1).any():
                raise CatalogError(
                    f"catalog {source}: duplicate {columns.fid} values {unique[counts > 1][:5]}"
                )
        for path in table[columns.path].to_pylist():
            _check_path(path, source)

    def index_sql(self) -> str:
        """SELECT of the normalized catalog, over DuckDB's read_parquet."""
        c = self.columns

        def col(role: str, sql_type: str) -> str:
            name = getattr(c, role)
            if name is None:
                return f"CAST(NULL AS {sql_type}) AS {role}"
            return f"CAST({quote_identifier(name)} AS {sql_type}) AS {role}"

        path = quote_identifier(c.path)
        fid = (
            "CAST(row_number() OVER () AS BIGINT) AS fid" if c.fid is None else col("fid", "BIGINT")
        )
        zone = (
            col("utm_zone", "VARCHAR")
            if c.utm_zone is not None or c.crs is None
            else f"{_zone_from_crs_sql(quote_identifier(c.crs))} AS utm_zone"
        )
        parts = [
            fid,
            col("year", "INTEGER"),
            f"CASE WHEN regexp_matches({path}, '^[A-Za-z][A-Za-z0-9+.-]*://') "
            f"OR starts_with({path}, '/') THEN {path} "
            f"ELSE {quote_literal(self.base)} || regexp_replace({path}, '^\\./', '') END AS path",
            col("crs", "VARCHAR"),
            zone,
            *(col(r, "DOUBLE") for r in ("wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")),
            *(col(r, "DOUBLE") for r in ("utm_west", "utm_south", "utm_east", "utm_north")),
            col("geom", "BLOB"),
        ]
        return f"SELECT {', '.join(parts)} FROM read_parquet(_source)"

    def tiles(self) -> TileTable:
        """The narrow tile table (read once, on first use)."""
        with self._lock:
            if self._tiles is None:
                self._tiles = self._read_tiles()
            return self._tiles

    def _read_tiles(self) -> TileTable:
        c = self.columns
        wanted = [c.year, c.path, c.wgs84_west, c.wgs84_south, c.wgs84_east, c.wgs84_north]
        zone_column = c.utm_zone or c.crs
        if zone_column:
            wanted.append(zone_column)
        try:
            with self._open() as f:
                table = pq.read_table(f, columns=list(dict.fromkeys(wanted)))
        except FileNotFoundError:
            raise CatalogError(f"catalog {redact(self.url)} not found") from None
        except (OSError, pa.ArrowException) as exc:
            raise CatalogError(f"catalog {redact(self.url)} cannot be read: {exc}") from None

        def numbers(name: str, dtype) -> np.ndarray:
            try:
                return table[name].to_numpy(zero_copy_only=False).astype(dtype)
            except (TypeError, ValueError, pa.ArrowException) as exc:
                raise CatalogError(
                    f"catalog {redact(self.url)}: column {name!r} is not numeric ({exc})"
                ) from None

        base = self.base
        paths = np.array([resolve_path(p, base) for p in table[c.path].to_pylist()], dtype=object)
        if c.utm_zone:
            zones = np.array(table[c.utm_zone].to_pylist(), dtype=object)
        elif c.crs:
            zones = np.array([zone_from_crs(v) for v in table[c.crs].to_pylist()], dtype=object)
        else:
            zones = np.full(len(table), None, dtype=object)
        return TileTable(
            year=numbers(c.year, np.int64),
            path=paths,
            utm_zone=zones,
            west=numbers(c.wgs84_west, np.float64),
            south=numbers(c.wgs84_south, np.float64),
            east=numbers(c.wgs84_east, np.float64),
            north=numbers(c.wgs84_north, np.float64),
        )


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


def _zone_from_crs_sql(column: str) -> str:
    return (
        f"CASE WHEN regexp_matches({column}, '^EPSG:32[67][0-9][0-9]$') THEN "
        f"CAST(CAST(right({column}, 2) AS INTEGER) AS VARCHAR) || "
        f"CASE WHEN {column}[8] = '6' THEN 'N' ELSE 'S' END END"
    )


def storage_options_for(url: str, storage_options: dict) -> dict[str, dict]:
    """Storage options per protocol family: the user's for the catalog's protocol, and
    anonymous access for the public catalog's bucket when the user gives none."""
    family = protocol_of(url)
    options = {family: dict(storage_options)}
    if url == PUBLIC_CATALOG and not storage_options:
        options[family] = dict(PUBLIC_STORAGE_OPTIONS)
    return options
