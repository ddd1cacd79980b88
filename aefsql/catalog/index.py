"""The AEF index catalog: which columns play which role, its normalisation and checks, and the
tile table (where its tile paths may point: `origins`)."""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import CatalogError, RangeReadError
from ..geometry import geo
from ..geometry.areas import box_ring
from ..geometry.footprints import rings_wkb
from ..storage.store import ByteStore, not_found, protocol_of, redact, redacted_text
from .origins import URL_WITH_SCHEME, allowed_host_keys, check_origin, check_path
from .schema import (
    INDEX_SCHEMA,
    REQUIRED_ROLES,
    ROLE_NAMES,
    TILE_ROLES,
    UTM_SIDES,
    WGS84_SIDES,
    CatalogColumns,
)
from .stac import TEXT_NAMES, StacLayout, is_stac, stac_layout

PUBLIC_CATALOG = "s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/aef_index.parquet"
# Source Cooperative serves the public bucket to anonymous, unsigned requests only.
PUBLIC_STORAGE_OPTIONS = {"anon": True, "client_kwargs": {"region_name": "us-west-2"}}

# A catalog is decoded whole (its tile table, its normalized copy): bounded, from its Parquet
# footer, before any row is decoded. A few hundred KB of Parquet can hold 10^7 identical rows
# (dictionary and run-length encodings), which cost minutes and gigabytes to decode and
# check. The public index has ~302k rows (~33.6k a year) and decodes to ~100 MB: the bounds
# leave it room to grow many times over. Raised with the environment variables.
MAX_CATALOG_ROWS = 2_000_000
MAX_CATALOG_BYTES = 1024**3
MAX_ROWS_VARIABLE = "AEFSQL_MAX_CATALOG_ROWS"
MAX_BYTES_VARIABLE = "AEFSQL_MAX_CATALOG_BYTES"


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
    if URL_WITH_SCHEME.match(url) and not url.startswith("file://"):
        return url.rsplit("/", 1)[0] + "/"
    local = url.removeprefix("file://")
    return os.path.dirname(os.path.abspath(local)) + "/"


def is_relative(path: str) -> bool:
    """True for a path that names a file under the catalog's folder: no scheme, no leading /."""
    return not (URL_WITH_SCHEME.match(path) or path.startswith("/"))


def resolve_path(path: str | None, base: str) -> str | None:
    if path is None or not is_relative(path):
        return path
    return base + path.removeprefix("./")


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
    # The footprint in the tile's own UTM zone as the catalog states it: [n, 4] west, south,
    # east, north; NaN where the catalog has none.
    utm: np.ndarray | None = None
    _grid: tuple | None = None  # see _grid_index

    def box_holds(self, t: int, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """True where (lon, lat) lies in tile t's lon/lat box (which may cross the
        antimeridian, stored with west > east)."""
        west, east = self.west[t], self.east[t]
        in_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
        return in_lon & (lat >= self.south[t]) & (lat <= self.north[t])

    def footprint_holds(self, t: int, x: np.ndarray, y: np.ndarray, crs: int) -> np.ndarray:
        """True where (x, y) in EPSG `crs` lies in tile t's UTM footprint as the catalog
        states it (west and south edges in, east and north out, as pixels are); True for all
        where the catalog states none, or the zone is unknown."""
        zone = self.utm_zone[t]
        bounds = None if self.utm is None else self.utm[t]
        if zone is None or bounds is None or not np.isfinite(bounds).all():
            return np.ones(x.size, dtype=bool)
        code = geo.utm_epsg_of_label(zone)
        if crs != code:
            x, y = geo.transform_points(crs, code, x, y)
        west, south, east, north = bounds
        return (x >= west) & (x < east) & (y >= south) & (y < north)

    def candidates(self, year: int, cell_lon: int, cell_lat: int) -> np.ndarray:
        """Indices of tiles of `year` whose lon/lat box touches the 1-degree cell."""
        if self._grid is None:
            self._grid = _grid_index(self)
        keys, starts, tiles = self._grid
        if not (-180 <= cell_lon <= 180 and -90 <= cell_lat <= 90):
            return _NO_TILES
        key = _cell_key(np.int64(year), np.int64(cell_lon), np.int64(cell_lat))
        i = int(np.searchsorted(keys, key))
        if i == keys.size or keys[i] != key:
            return _NO_TILES
        return tiles[starts[i] : starts[i + 1]]


_NO_TILES = np.zeros(0, dtype=np.int64)


def _cell_key(year, cell_lon, cell_lat):
    """One integer per (year, 1-degree cell): cells run from -180 to 180 and -90 to 90."""
    return (year * 361 + (cell_lon + 180)) * 181 + (cell_lat + 90)


def _grid_index(tiles: TileTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which tiles' lon/lat boxes touch each (year, 1-degree cell): the cells' keys
    (`_cell_key`, ascending), and for key i the tile indices tiles[starts[i]:starts[i + 1]]
    (ascending). Laid out with numpy, not a loop over rows (a catalog may have millions):
    one entry per (tile, cell) pair, sorted by cell."""
    rows = np.arange(tiles.year.size)
    west, east = tiles.west, tiles.east
    # A box crossing the antimeridian is stored with west > east: two spans.
    crossing = west > east
    span_row = np.concatenate([rows, rows[crossing]])
    lo = np.concatenate([west, np.full(int(crossing.sum()), -180.0)])
    hi = np.concatenate([np.where(crossing, 180.0, east), east[crossing]])
    ascending = np.argsort(span_row, kind="stable")  # so each cell lists its tiles in order
    span_row, lo, hi = span_row[ascending], lo[ascending], hi[ascending]
    x0 = np.floor(lo).astype(np.int64)
    y0 = np.floor(tiles.south[span_row]).astype(np.int64)
    nx = np.floor(hi).astype(np.int64) - x0 + 1
    ny = np.floor(tiles.north[span_row]).astype(np.int64) - y0 + 1
    cells = nx * ny  # bounded: a box is at most 20° wide and tall (bounds_problem)
    owner = np.repeat(np.arange(span_row.size), cells)
    k = np.arange(owner.size) - np.repeat(np.cumsum(cells) - cells, cells)
    tile = span_row[owner]
    key = _cell_key(
        tiles.year[tile].astype(np.int64), x0[owner] + k // ny[owner], y0[owner] + k % ny[owner]
    )
    order = np.argsort(key, kind="stable")
    key, tile = key[order], tile[order].astype(np.int64)
    firsts = np.flatnonzero(np.diff(key, prepend=key[:1] - 1))  # where each cell's run starts
    return key[firsts], np.append(firsts, key.size), tile


class Catalog:
    """An index parquet (local path or URL), read lazily through the ByteStore.

    Registering reads nothing: the first query that needs the catalog reads and checks it,
    so that connecting (dbt opens many connections) never waits on the network. A local
    catalog is checked at registration all the same (`check`), which costs no request.

    `allowed_hosts`: hosts (buckets for s3 and gs) other than its own that a remote catalog
    may name tiles on; default none (see `check_origin`). `tiles`: its tile table, read and
    checked by another process (Spark's driver broadcasts it to executors, which may not
    reach the catalog at all): locating points then reads nothing.
    """

    def __init__(
        self,
        url: str,
        store: ByteStore,
        *,
        allowed_hosts: list[str] | None = None,
        tiles: TileTable | None = None,
    ):
        self.url = url
        self.store = store
        self.allowed_hosts = allowed_host_keys(allowed_hosts)
        self._columns: CatalogColumns | None = None
        self._stac: StacLayout | None = None  # for a STAC-GeoParquet catalog (see stac.py)
        self._tiles: TileTable | None = tiles
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
        """Where the parquet is read from: the URL (a remote one is read whole, into memory, by
        `_fetch_whole`). With a disk cache, a remote catalog's bytes are taken from its
        verified copy of the current version rather than the network, or copied there once
        fetched. A catalog without a version is not cached: its copy could not be proven
        current."""
        cache = self.store.disk_cache
        if cache is None or self.is_local:
            return self.url
        version = self.store.versions([self.url])[self.url]
        if version is None or (self._fetched is not None and self._fetched[0] == version):
            return self.url
        data = cache.get_whole(self.url, str(version))
        if data is not None:
            self._fetched = (version, data)
        else:
            self._fetch_whole()
            read_from, data = self._fetched  # the version it was read from: newer if it changed
            if read_from is not None:
                cache.put_whole(self.url, str(read_from), data)
        return self.url

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
    def _parquet(self, read_dictionary=None):
        """The catalog as a pyarrow ParquetFile; errors say what went wrong and the way out.
        A remote catalog is read whole through the store (retried, one version), a local
        one in place. `read_dictionary`: columns decoded as dictionaries (see
        `check_decoded`)."""
        url = redact(self.url)
        try:
            source = self._source()
            if protocol_of(source) == "file":
                with self.store.filesystem(source).open(source, "rb") as f:
                    yield pq.ParquetFile(f, read_dictionary=read_dictionary)
            else:
                data = pa.BufferReader(self._fetch_whole())
                yield pq.ParquetFile(data, read_dictionary=read_dictionary)
        except FileNotFoundError as exc:
            raise CatalogError(f"{not_found(self.url, exc)}{_WAY_OUT}") from None
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
                    check_size(parquet.metadata, redact(self.url))
                if is_stac(schema):
                    self._stac = stac_layout(schema, redact(self.url))
                    columns = self._stac.columns
                else:
                    columns = columns_from_names(schema.names, redact(self.url))
                    _check_types(schema, columns, redact(self.url))
                self._columns = columns
            return self._columns

    def check(self) -> None:
        """A local catalog is read and checked now, so that a bad one fails at registration:
        its schema (roles, types), ids (no duplicates), paths (known schemes, none escaping
        the catalog's folder, none to cloud metadata) and bounds (see `bounds_problem`). A
        remote one is checked on first use, a given tile table (see above) where it was read."""
        if self.is_local and self._tiles is None:
            self.index_file()

    def index_file(self) -> str:
        """Path of a local parquet holding the normalized, checked catalog (INDEX_SCHEMA),
        written on first use; aef_index() reads it."""
        with self._lock:
            if self._index_file is None:
                folder = tempfile.mkdtemp(prefix="aefsql-catalog-")
                weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
                target = os.path.join(folder, "index.parquet")
                columns, keys = self.columns, []
                names = _source_names(columns)
                with (
                    self._parquet(read_dictionary=self._text_sources(names)) as parquet,
                    pq.ParquetWriter(target, INDEX_SCHEMA) as out,
                ):
                    # Its strings, read as dictionaries: no larger than the footer says (the
                    # numbers' size the footer tells).
                    check_decoded(self._read(parquet, self._text(parquet, names)), redact(self.url))
                    offset = 0
                    for batch in parquet.iter_batches(columns=self._sources(names)):
                        table = normalize(
                            _dense(self._flat(pa.Table.from_batches([batch]), names, offset)),
                            columns,
                            self.url,
                            offset,
                            allowed_hosts=self.allowed_hosts,
                        )
                        keys.append(table.select(["fid", "path", "year"]))
                        out.write_table(table)
                        offset += batch.num_rows
                keys = pa.concat_tables(keys) if keys else INDEX_SCHEMA.empty_table()
                _check_fids(keys["fid"], redact(self.url))
                _check_repeats(keys["path"], keys["year"], redact(self.url))
                self._index_file = target
            return self._index_file

    def tiles_read(self) -> TileTable | None:
        """The tile table if it has been read, else None (reads nothing)."""
        return self._tiles

    def tiles(self) -> TileTable:
        """The narrow tile table (read once, on first use)."""
        with self._lock:
            if self._tiles is None:
                columns = self.columns
                wanted = _source_names(columns, TILE_ROLES)
                with self._parquet(read_dictionary=self._text_sources(wanted)) as parquet:
                    table = self._read(parquet, wanted)
                check_decoded(table, redact(self.url))
                table = _dense(table)
                table = normalize(
                    table, columns, self.url, 0, TILE_ROLES, allowed_hosts=self.allowed_hosts
                )
                _check_repeats(table["path"], table["year"], redact(self.url))
                self._tiles = TileTable(
                    year=table["year"].to_numpy().astype(np.int64),
                    path=table["path"].to_numpy(zero_copy_only=False),
                    utm_zone=table["utm_zone"].to_numpy(zero_copy_only=False),
                    **{
                        side: table[f"wgs84_{side}"].to_numpy(zero_copy_only=False)
                        for side in ("west", "south", "east", "north")
                    },
                    utm=np.column_stack(
                        [
                            table[f"utm_{side}"].fill_null(np.nan).to_numpy(zero_copy_only=False)
                            for side in ("west", "south", "east", "north")
                        ]
                    ).astype(np.float64),
                )
            return self._tiles

    # The catalog's columns by their narrow names (`_source_names`): a narrow catalog's are
    # read as they are, a STAC-GeoParquet one's from its items' fields (`stac.StacLayout`).

    def _sources(self, names: list[str]) -> list[str]:
        """The parquet columns to read for the narrow columns `names`."""
        return names if self._stac is None else self._stac.sources(names)

    def _text_sources(self, names: list[str]) -> list[str]:
        """Of those, the leaves read as dictionaries (see `check_decoded`)."""
        return names if self._stac is None else self._stac.text_sources(names)

    def _text(self, parquet: pq.ParquetFile, names: list[str]) -> list[str]:
        """Of the narrow columns `names`, those holding strings or bytes."""
        if self._stac is not None:
            return [n for n in names if n in TEXT_NAMES]
        schema = parquet.schema_arrow
        return [n for n in names if _is_text(schema.field(n).type)]

    def _flat(self, table: pa.Table, names: list[str], row_offset: int) -> pa.Table:
        """A table read with `_sources(names)` as the narrow columns `names`."""
        if self._stac is None:
            return table
        return self._stac.flatten(table, names, redact(self.url), row_offset)

    def _read(self, parquet: pq.ParquetFile, names: list[str]) -> pa.Table:
        return self._flat(parquet.read(columns=self._sources(names)), names, 0)


@lru_cache(maxsize=1)
def empty_index_file() -> str:
    """A catalog of no row in INDEX_SCHEMA: what aef_index() binds to while it is being
    created (DuckDB binds a table macro at creation; registering must read no catalog)."""
    folder = tempfile.mkdtemp(prefix="aefsql-empty-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "index.parquet")
    pq.write_table(INDEX_SCHEMA.empty_table(), path)
    return path


# (`aefsql demo` prints the path of the index it writes, ~/.cache/aefsql/demo/index.parquet.)
_WAY_OUT = (
    "; pass --catalog (catalog=…): for a local one, the index `aefsql demo` writes and prints"
)


def _source_names(columns: CatalogColumns, roles=None) -> list[str]:
    roles = roles or [f.name for f in dataclasses.fields(CatalogColumns)]
    names = [getattr(columns, role) for role in roles]
    return list(dict.fromkeys(n for n in names if n is not None))


def normalize(
    table: pa.Table,
    columns: CatalogColumns,
    catalog_url: str,
    row_offset: int,
    roles=None,
    *,
    allowed_hosts: Iterable[str] | None = None,
) -> pa.Table:
    """A catalog table in INDEX_SCHEMA (or its `roles`): paths absolute, utm_zone from crs
    where the catalog has none, a box footprint where it has no geometry, fid the row
    number where it has none. The one place where the source's names and ways are undone,
    and so where the catalog is checked as the untrusted input it is: tile paths (see
    `check_origin`) and lon/lat bounds (see `bounds_problem`), each refusal naming the row.
    `row_offset` is the number of catalog rows before `table`'s first."""
    n = table.num_rows
    base = catalog_base(catalog_url)
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
            paths = source("path")
            _check_paths(paths, catalog_url, row_offset, allowed_hosts)
            built[role] = _resolved(paths, base)
        elif role == "utm_zone" and columns.utm_zone is None:
            crs = source("crs")
            built[role] = pa.nulls(n, pa.string()) if crs is None else _zones(crs)
        elif role == "geom" and columns.geom is None:
            built[role] = _box_geometries([numbers(side, pa.float64()) for side in WGS84_SIDES])
        elif role in ("crs", "utm_zone"):
            column = source(role)
            built[role] = pa.nulls(n, pa.string()) if column is None else column.cast(pa.string())
        else:
            built[role] = numbers(role, field.type)
    if "year" in built and built["year"].null_count:  # a tile of no year: no query finds it
        row = int(np.argmax(pc.is_null(built["year"]).to_numpy(zero_copy_only=False)))
        where = f"catalog {redact(catalog_url)}, row {row_offset + row + 1}"
        raise CatalogError(f"{where}: year is NULL ({built['year'].null_count} row(s) are)")
    if all(side in built for side in WGS84_SIDES):
        _check_bounds([built[side] for side in WGS84_SIDES], catalog_url, row_offset)
    if all(side in built for side in UTM_SIDES):
        _check_utm_bounds([built[side] for side in UTM_SIDES], catalog_url, row_offset)
    return pa.table(built, schema=schema)


def _check_utm_bounds(sides: list[pa.Array], catalog_url: str, row_offset: int) -> None:
    """CatalogError for the first row whose UTM box is upside down or back to front (west
    past east, south past north: rasterio's bounds of a south-up file read as north-up, say);
    NULL sides are left to the headers."""
    west, south, east, north = (s.to_numpy(zero_copy_only=False) for s in sides)
    with np.errstate(invalid="ignore"):
        wrong = np.flatnonzero((west > east) | (south > north))
    if wrong.size:
        row = int(wrong[0])
        values = ", ".join(
            f"{name}={_bound_text(side[row].as_py())}"
            for name, side in zip(UTM_SIDES, sides, strict=True)
        )
        raise CatalogError(
            f"catalog {redact(catalog_url)}, row {row_offset + row + 1}: {values}: west is "
            f"east of east or south north of north ({wrong.size} row(s))"
        )


def _check_paths(
    paths: pa.ChunkedArray,
    catalog_url: str,
    row_offset: int,
    allowed_hosts: Iterable[str] | None,
) -> None:
    """Every path checked as `check_path` and `check_origin` say, naming the first wrong
    row, without a Python loop over the rows (a catalog may have millions): what the
    checks depend on is found for all rows at once — blank, climbing out with `..`, and the
    scheme://authority prefix of a URL (or `/` for a local path), of which a catalog has a
    few — and each distinct prefix is checked once, on its first row. The first wrong row is
    then checked alone, for its message."""
    text = pc.fill_null(paths, "")
    # The scheme://authority prefix, as _AUTHORITY matches it.
    prefix = pc.fill_null(
        pc.struct_field(pc.extract_regex(text, r"^(?P<p>[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)"), [0]),
        "",
    )
    local = pc.and_(pc.equal(prefix, ""), pc.starts_with(text, "/"))
    key = pc.if_else(local, "/", prefix)  # "": a relative path
    wrong = pc.or_(
        pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0),
        pc.and_(pc.equal(prefix, ""), pc.match_substring_regex(text, r"(^|[/\\])\.\.([/\\]|$)")),
    ).to_numpy(zero_copy_only=False)
    first = [int(np.argmax(wrong))] if wrong.any() else []
    for value in pc.unique(key).to_pylist():
        if value == "":
            continue
        row = pc.index(key, value).as_py()
        if _path_problem(text[row].as_py(), catalog_url, allowed_hosts) is not None:
            first.append(row)
    if first:
        row = min(first)
        problem = _path_problem(paths[row].as_py(), catalog_url, allowed_hosts)
        raise CatalogError(f"catalog {redact(catalog_url)}, row {row_offset + row + 1}: {problem}")


def _path_problem(path: str | None, catalog_url: str, allowed_hosts) -> str | None:
    """Why the catalog may not name this path; None when it may."""
    try:
        check_path(path)
        # A relative path resolves under the catalog's own folder: same origin.
        if not is_relative(path):
            check_origin(path, catalog_url, allowed_hosts)
    except CatalogError as exc:
        return str(exc)
    return None


def _resolved(paths: pa.ChunkedArray, base: str) -> pa.ChunkedArray:
    """`resolve_path` over a column: relative paths under `base` (a leading ./ dropped)."""
    text = pc.fill_null(paths, "")
    relative = pc.invert(
        pc.or_(pc.match_substring_regex(text, URL_WITH_SCHEME.pattern), pc.starts_with(text, "/"))
    )
    under = pc.binary_join_element_wise(
        base, pc.replace_substring_regex(paths, r"^\./", "", max_replacements=1), ""
    )
    return pc.if_else(relative, under, paths).cast(pa.string())


def _box_geometries(corners: list) -> pa.Array:
    """The WKB box of each row's west, south, east, north; NULL where a bound is NULL."""
    n = len(corners[0])
    wkb = geo.boxes_wkb(*(c.to_numpy(zero_copy_only=False) for c in corners))
    offsets = np.arange(n + 1, dtype=np.int64) * wkb.shape[1]
    boxes = pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(wkb)]
    ).cast(pa.binary())
    west, south, east, north = (c.to_numpy(zero_copy_only=False) for c in corners)
    with np.errstate(invalid="ignore"):
        across = np.flatnonzero(west > east)  # across the antimeridian: its two sides
    if across.size:
        rings = [box_ring(west[i], south[i], east[i], north[i]) for i in across.tolist()]
        blobs = boxes.to_pylist()
        for i, blob in zip(across.tolist(), rings_wkb(rings).to_pylist(), strict=True):
            blobs[i] = blob
        boxes = pa.array(blobs, pa.binary())
    missing = pc.is_null(corners[0])
    for c in corners[1:]:
        missing = pc.or_(missing, pc.is_null(c))
    return pc.if_else(missing, pa.scalar(None, pa.binary()), boxes)


def _zones(crs: pa.ChunkedArray) -> pa.Array:
    """`zone_from_crs` of each row, computed once per distinct CRS."""
    codes = crs.cast(pa.string()).combine_chunks().dictionary_encode()
    zones = pa.array([zone_from_crs(c) for c in codes.dictionary.to_pylist()], pa.string())
    return zones.take(codes.indices)


def check_size(metadata: pq.FileMetaData, source: str) -> None:
    """CatalogError for a catalog with more rows, or more bytes once decoded, than
    aefsql decodes (see MAX_CATALOG_ROWS), from its footer: before any row is decoded."""
    rows = metadata.num_rows
    decoded = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    max_rows = _limit(MAX_ROWS_VARIABLE, MAX_CATALOG_ROWS)
    max_bytes = _limit(MAX_BYTES_VARIABLE, MAX_CATALOG_BYTES)
    if rows > max_rows:
        raise CatalogError(
            f"catalog {source} has {rows:,} rows, over the {max_rows:,} aefsql reads "
            f"(the public index has ~302k); set {MAX_ROWS_VARIABLE} to raise the bound"
        )
    if decoded > max_bytes:
        raise CatalogError(
            f"catalog {source} holds {decoded:,} bytes of uncompressed data, over the "
            f"{max_bytes:,} aefsql reads; set {MAX_BYTES_VARIABLE} to raise the bound"
        )


def check_decoded(table: pa.Table, source: str) -> None:
    """CatalogError when `table` (the catalog, its strings read as dictionaries: no larger
    than the footer says) would take more than the bound once they are expanded. The
    footer's sizes do not tell it: one long value, stored once in a dictionary, may stand
    in every row."""
    size = 0
    for column in table.columns:
        for chunk in column.chunks:
            if pa.types.is_dictionary(chunk.type):
                lengths = pc.binary_length(chunk.dictionary).fill_null(0)
                size += pc.sum(lengths.take(chunk.indices)).as_py() or 0
                size += 4 * len(chunk)  # the offsets of the expanded column
            else:
                size += chunk.nbytes
    max_bytes = _limit(MAX_BYTES_VARIABLE, MAX_CATALOG_BYTES)
    if size > max_bytes:
        raise CatalogError(
            f"catalog {source} decodes to {size:,} bytes, over the {max_bytes:,} aefsql "
            f"reads; set {MAX_BYTES_VARIABLE} to raise the bound"
        )


def _is_text(arrow_type: pa.DataType) -> bool:
    """A string or binary type (its values' sizes vary: a dictionary can repeat a long one)."""
    if isinstance(arrow_type, pa.ExtensionType):
        arrow_type = arrow_type.storage_type
    return any(
        test(arrow_type)
        for test in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_dictionary,
        )
    )


def _dense(table: pa.Table) -> pa.Table:
    """`table` with its dictionary columns expanded to their values' type."""
    return pa.table(
        {
            name: column.cast(column.type.value_type)
            if pa.types.is_dictionary(column.type)
            else column
            for name, column in zip(table.column_names, table.columns, strict=True)
        }
    )


def _limit(variable: str, default: int) -> int:
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise CatalogError(f"{variable}={text!r}: expected a positive whole number")
    return value


# An AEF tile spans about 0.75 degrees; a box of more is no tile, and locating points visits
# every 1-degree cell of every box, so one absurd box (a whole hemisphere, 1e9 degrees) would
# cost seconds to hours and gigabytes. 20 leaves room for other grids and for the stretched
# longitudes of tiles near the poles.
MAX_TILE_DEGREES = 20.0


def bounds_problem(west, south, east, north) -> tuple[int, str, int] | None:
    """The first row whose lon/lat box cannot be a tile's, why, and how many rows are wrong;
    None when every box can be. Arrays of float64, NaN where the catalog has NULL."""
    west, south, east, north = (np.asarray(a, dtype=np.float64) for a in (west, south, east, north))
    crossing = west > east  # a box across the antimeridian is stored with west > east
    with np.errstate(invalid="ignore"):  # inf - inf: that row is refused as not finite anyway
        width = np.where(crossing, east - west + 360.0, east - west)
        height = north - south
    finite = np.isfinite(west) & np.isfinite(south) & np.isfinite(east) & np.isfinite(north)
    limit = f"{MAX_TILE_DEGREES:g}°"
    checks = [  # in the order a reader would fix them
        (~finite, "a bound is NULL, NaN or infinite"),
        ((np.abs(south) > 90) | (np.abs(north) > 90), "latitude outside [-90, 90]"),
        ((np.abs(west) > 180) | (np.abs(east) > 180), "longitude outside [-180, 180]"),
        (south > north, "south > north"),
        (height > MAX_TILE_DEGREES, f"taller than {limit} (an AEF tile is about 0.75°)"),
        (
            ~crossing & (width > MAX_TILE_DEGREES),
            f"wider than {limit} (an AEF tile is about 0.75°)",
        ),
        (
            crossing & (width > MAX_TILE_DEGREES),
            f"west > east, which reads as a box across the antimeridian, wider than {limit}",
        ),
    ]
    wrong = np.zeros(west.shape, dtype=bool)
    for mask, _ in checks:
        wrong |= mask
    if not wrong.any():
        return None
    row = int(np.argmax(wrong))
    reason = next(reason for mask, reason in checks if mask[row])
    return row, reason, int(wrong.sum())


def _check_bounds(sides: list[pa.Array], catalog_url: str, row_offset: int) -> None:
    """CatalogError naming the first row (1-based, of the whole catalog) whose box is wrong,
    with its values."""
    found = bounds_problem(*(side.to_numpy(zero_copy_only=False) for side in sides))
    if found is None:
        return
    row, reason, count = found
    values = ", ".join(
        f"{name.removeprefix('wgs84_')}={_bound_text(side[row].as_py())}"
        for name, side in zip(WGS84_SIDES, sides, strict=True)
    )
    more = f" ({count - 1} more row(s) are wrong too)" if count > 1 else ""
    raise CatalogError(
        f"catalog {redact(catalog_url)}, row {row_offset + row + 1}: bounds {values}: "
        f"{reason}{more}"
    )


def _bound_text(value: float | None) -> str:
    return "NULL" if value is None else repr(float(value))


def _check_fids(fids: pa.ChunkedArray, source: str) -> None:
    """No duplicate ids (a sort, not a Python loop over rows)."""
    values = np.sort(fids.to_numpy())
    repeated = np.unique(values[1:][values[1:] == values[:-1]])
    if repeated.size:
        raise CatalogError(f"catalog {source}: duplicate fid values {repeated[:5].tolist()}")


def _check_repeats(paths: pa.ChunkedArray, years: pa.ChunkedArray, source: str) -> None:
    """No file named twice for one year (its resolved path): each of its pixels would be
    read twice — counted twice by aef_pixels and aef_zonal, weighing twice in a mean — and
    which row's fid a point gets would be an accident. Refused naming the rows (1-based)."""
    if len(paths) == 0:
        return
    path_id = paths.combine_chunks().dictionary_encode().indices.to_numpy().astype(np.int64)
    year = years.to_numpy().astype(np.int64)
    key = (path_id << 32) | (year - year.min())  # one integer per (path, year)
    ordered = np.sort(key)
    repeated_keys = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeated_keys.size == 0:
        return
    row = int(np.argmax(np.isin(key, repeated_keys)))  # the first row of a repeated file
    same = np.flatnonzero(key == key[row]) + 1  # its rows, 1-based
    shown = ", ".join(map(str, same[:5])) + (", …" if same.size > 5 else "")
    rows = f"rows {same[0]} and {same[1]}" if same.size == 2 else f"rows {shown}"
    more = repeated_keys.size - 1
    also = f"; {more} more file(s) are named more than once too" if more else ""
    raise CatalogError(
        f"catalog {source}: {rows} name the same file for {year[row]}, "
        f"{redact(paths[row].as_py())}: its pixels would be read more than once{also}"
    )


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
    for role in WGS84_SIDES:
        need(role, lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "a number")


def zone_from_crs(crs: str | None) -> str | None:
    """'EPSG:32633' -> '33N', 'EPSG:32733' -> '33S'; None for non-UTM CRSs."""
    match = re.fullmatch(r"EPSG:(\d{5})", (crs or "").strip(), flags=re.IGNORECASE)
    return None if match is None else geo.utm_label(int(match.group(1)))


def storage_options_for(url: str, storage_options: dict) -> dict[str, dict]:
    """Storage options per protocol family: the user's for the catalog's protocol, and
    anonymous access for the public catalog's bucket when the user gives none."""
    family = protocol_of(url)
    options = {family: dict(storage_options)}
    if url == PUBLIC_CATALOG and not storage_options:
        options[family] = dict(PUBLIC_STORAGE_OPTIONS)
    return options
