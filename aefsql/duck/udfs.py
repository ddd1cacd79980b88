"""The aef_* UDF bodies: `SessionUdfs` is the DuckDB face of one session (Arrow in, Arrow
out, each body calling the kernels with the session); registration.py creates them on a
connection."""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections import OrderedDict
from dataclasses import asdict, fields
from functools import partial

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..aef import BAND_NAMES
from ..catalog.index import empty_index_file
from ..errors import AefsqlError
from ..geometry import geo
from ..geometry.areas import Area, area_from, projected_all
from ..geometry.footprints import (
    cell_geometries,
    pixel_geometries,
    points_wkb,
    rectangle_geometries,
    segments_for,
)
from ..headers.table import SCHEMA
from ..kernels import change, coverage, points
from ..kernels.budgets import STREAMED_BYTES
from ..kernels.chips import chips_per_call, read_chips
from ..kernels.engine import file_by_file
from ..kernels.grid import grid_geometries, grid_means
from ..kernels.grouping import group_indices
from ..kernels.locate import Located, locate_each
from ..kernels.means import entries_of, isolated_zonal_means, zonal_means
from ..kernels.pixels import (
    Chunks,
    Unit,
    area_chunks,
    area_units,
    check_area_size,
    chunk_blocks,
    unit_chunks,
)
from ..kernels.points import Samples, band_indices
from ..kernels.readahead import ReadAhead, batch_key
from ..kernels.similarity import Cosines, query_vector
from ..options import (
    check_cell,
    check_geometry,
    check_input_columns,
    check_level,
    check_on_error,
    resolve_json,
    value_columns,
    year_list,
)
from ..session import Session
from .sampled import SampledStores
from .types import (
    AREA_PLAN_ARROW,
    CHANGE_ARROW,
    CHANGE_CHUNK_ARROW,
    CHANGE_UNIT_ARROW,
    CHIP_ARROW,
    CHUNK_ARROW,
    EMBEDDING_ARROW,
    GRID_ARROW,
    LOCATED_ARROW,
    LONLAT_ARROW,
    OPTIONS_ARROW,
    PIXEL_ARROW,
    PIXEL_SIMILARITY_ARROW,
    PIXEL_VECTOR_ARROW,
    PLAN_ARROW,
    QUERY_ARROW,
    SAMPLE_VALUES_ARROW,
    UNIT_ARROW,
    ZONAL_ARROW,
    status_words,
)

DUCKDB_VECTOR_SIZE = 2048  # rows a scalar UDF gets at once (DuckDB's STANDARD_VECTOR_SIZE)
# aef_sample_points samples whole files' groups of points in batches of about this many
# points: the sampler's index arrays (~70 bytes a point) then stay bounded however many
# points a DuckDB vector of groups holds, and a file's blocks are still read once.
SAMPLE_BATCH_POINTS = 2**19
OWNING_PLANS = 64  # plans remembered as having chunks (`SessionUdfs._owned`)


class SessionUdfs:
    """The DuckDB face of one session: the bodies of its Python UDFs (Arrow in, Arrow out,
    each calling the kernels with the session), and their installation on connections."""

    def __init__(self, session: Session, *, warn_empty: bool = True):
        self.session = session
        # A year the catalog lacks, an area outside coverage or with swapped lon/lat give
        # empty or NULL results: said as Python warnings (`options`, the area plans; the shell
        # prints them, a notebook shows them), unless the caller says it itself (the Python
        # API and the CLI verbs do, pointing at the caller's line).
        self.warn_empty = warn_empty
        self.udf_prefix: str | None = None  # the names its Python UDFs were created under
        self.sampled = SampledStores()  # aef_sample_points' values, query by query
        # Per thread: whether this thread is creating the macros (see index_file).
        self._install_state = threading.local()
        # aef_pixels' next vector of chunks read while DuckDB consumes the current one.
        self.read_ahead = ReadAhead(session)
        self._years_held: dict[int, bool] = {}  # see _has_year
        # Plans (an area, its year or years, level) some unit of which had chunks, recent
        # first: their stand-in unit, which comes after them, then has none without
        # planning every tile again to find out (`_owned`).
        self._owning: OrderedDict[tuple, bool] = OrderedDict()
        self._owning_lock = threading.Lock()

    def _has_year(self, year: int) -> bool:
        """Whether the catalog has a tile of `year`, looked up once a year (sampled_values
        asks it for every vector of rows with uncovered points)."""
        if year not in self._years_held:
            self._years_held[year] = not self.session.missing_years([year])
        return self._years_held[year]

    def _owned(self, plan: tuple, stand_in: bool, chunks: Chunks) -> None:
        """Remember that a unit of `plan` had chunks (a stand-in forgets it: the plan is
        done). Units are planned in order, a stand-in after its tiles' units; planned out of
        order, a stand-in looks for itself, as before."""
        with self._owning_lock:
            if stand_in:
                self._owning.pop(plan, None)
            elif chunks.row.size:
                self._owning[plan] = True
                self._owning.move_to_end(plan)
                while len(self._owning) > OWNING_PLANS:
                    self._owning.popitem(last=False)

    def aef_file_embedding(self, path, lon, lat) -> pa.StructArray:
        engine = self.session.engine
        return _struct(points.sample(engine, _objects(path), geo.floats(lon), geo.floats(lat)))

    def aef_locate(self, x, y, year, crs) -> pa.StringArray:
        return pa.array(self._locate(x, y, year, crs).path, type=pa.string())

    def locate_pixel(self, x, y, year, crs) -> pa.StructArray:
        """aef_sample_points' locate: per point, its tile and its pixel there (NULL for none),
        which `sample_group` reads without projecting the point again."""
        found = self._locate(x, y, year, crs)
        known = found.row >= 0
        return pa.StructArray.from_arrays(
            [
                pa.array(found.path, pa.string()),
                pa.array(found.row, pa.int32(), mask=~known),
                pa.array(found.col, pa.int32(), mask=~known),
            ],
            fields=list(LOCATED_ARROW),
        )

    def _locate(self, x, y, year, crs) -> Located:
        """The tile of each point, and its pixel there (`locate_each`)."""
        session = self.session
        return locate_each(
            session.catalog.tiles(),
            session.engine.headers,
            geo.floats(x),
            geo.floats(y),
            geo.floats(year),
            _ints(crs),
        )

    def aef_embedding(self, x, y, year, crs) -> pa.StructArray:
        found = self._locate(x, y, year, crs)
        return _struct(points.sample_pixels(self.session.engine, *found))

    def sample_store(self, rows, years, bands, files, geometry) -> pa.Int64Array:
        """aef_sample_points' store for its query (`SampledStores`): `rows` input rows x
        `years` of `bands` (names; sorted, as the band columns are), sampled from `files`,
        keeping each value's place when `geometry` is asked for; one store per row."""
        return pa.array(
            [
                self.sampled.open(
                    int(n or 0),
                    ys or [],
                    band_indices(sorted(names or ())),
                    paths or [],
                    places=kind is not None,
                )
                for n, ys, names, paths, kind in zip(
                    rows.to_pylist(),
                    years.to_pylist(),
                    bands.to_pylist(),
                    files.to_pylist(),
                    geometry.to_pylist(),
                    strict=True,
                )
            ],
            pa.int64(),
        )

    def sample_group(self, store, path, year, rows, pixel_rows, pixel_cols, on_error):
        """Sample each group of points of one file and year, at their pixels there
        (`locate_pixel`'s; NULL: unknown, the file's header could not be read), into the
        query's `store` at their output positions (`SampledStores`); per group, its points.

        `on_error` 'null': a file that cannot be read gives its rows NULL bands and the error
        message instead of failing the query; 'raise' (the default) fails it.
        """
        if len(path) == 0:
            return pa.array([], pa.int64())
        rows, pixel_rows, pixel_cols = (_contiguous(c) for c in (rows, pixel_rows, pixel_cols))
        counts = rows.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        modes = set(on_error.to_pylist())
        for mode in sorted(modes):
            check_on_error(mode)
        (number,) = set(_ints(store).tolist())  # a query has one store
        if modes != {"null"}:
            # DuckDB hands the groups to several calls, on several threads: every call
            # reads every file's header first, so that the query fails on the same file
            # (unreadable, not a TIFF) whichever call runs first, not on another's blocks.
            self.session.engine.headers.headers_for(self.sampled.files(number))
        paths, years = _objects(path), _ints(year)
        rows, pixel_rows, pixel_cols = (c.flatten() for c in (rows, pixel_rows, pixel_cols))
        for first, end in _batches(counts, SAMPLE_BATCH_POINTS):
            start, stop = int(counts[:first].sum()), int(counts[:end].sum())

            def fill(into: Samples, errors, first=first, end=end, start=start, stop=stop):
                at = self.sampled.positions(
                    number,
                    _ints(rows.slice(start, stop - start)),
                    years[first:end],
                    counts[first:end],
                )
                _, messages = points.sample_pixels_or_errors(
                    self.session.engine,
                    np.repeat(paths[first:end], counts[first:end]),
                    _int32s(pixel_rows.slice(start, stop - start)),
                    _int32s(pixel_cols.slice(start, stop - start)),
                    into.bands,
                    on_error="null" if modes == {"null"} else "raise",
                    keep_blocks=False,
                    keep_values=True,
                    into=(into, at),
                )
                if messages is not None:
                    errors()[at] = messages
                self.sampled.place(
                    number,
                    at,
                    np.repeat(paths[first:end], counts[first:end]),
                    _int32s(pixel_rows.slice(start, stop - start)),
                    _int32s(pixel_cols.slice(start, stop - start)),
                )

            self.sampled.fill(number, fill)
        return pa.array(counts, pa.int64())

    def sampled_values(self, store, row, year, sampled) -> pa.StructArray:
        """aef_sample_points' values of each (row, year), read back from the query's
        `store` (`SampledStores`): the bands, NULL where not covered or nodata, and the
        error message. `sampled` (the points sampled) is not read: it makes the query
        finish the sampling before it reads."""
        if len(row) == 0:
            return pa.array([], SAMPLE_VALUES_ARROW)
        number = int(_ints(store)[0])  # the same for every row: a query's one store
        at = self.sampled.positions(number, _ints(row), _ints(year))
        part, messages = self.sampled.read(number, at)
        self._say_uncovered(number)
        errors = pa.nulls(at.size, pa.string()) if messages is None else pa.array(messages)
        years = _ints(year)
        failed = np.zeros(at.size, dtype=bool)
        if messages is not None:
            failed = np.fromiter((m is not None for m in messages), dtype=bool, count=at.size)
        statuses = status_words(
            coverage.point_status_codes(
                part.covered,
                part.complete(),
                failed,
                years,
                [y for y in np.unique(years[~part.covered]).tolist() if not self._has_year(y)],
            )
        )
        return pa.StructArray.from_arrays(
            [*_band_columns(part), errors.cast(pa.string()), statuses],
            fields=list(SAMPLE_VALUES_ARROW),
        )

    def sampled_geometry(self, store, row, year, geometry, sampled) -> pa.Array:
        """aef_sample_points' `geom` of each (row, year): the pixel it was sampled from, as
        lon/lat geometry (`geometry` 'point': its centre; 'pixel': its footprint), read
        from the query's `store`; NULL where no tile holds the point. `sampled` as for
        `sampled_values`."""
        out = pa.nulls(len(row), pa.binary())
        kinds = set(_contiguous(geometry).to_pylist())
        if len(row) == 0 or kinds == {None}:
            return out
        (kind,) = kinds
        check_geometry(kind)
        number = int(_ints(store)[0])
        at = self.sampled.positions(number, _ints(row), _ints(year))
        found = self.sampled.read_places(number, at)
        self._say_uncovered(number)
        if found is None:
            return out
        paths, rows, cols = found
        held = np.flatnonzero(paths != None)  # noqa: E711 (elementwise, over objects)
        if held.size == 0:
            return out
        headers = self.session.engine.headers.headers_for(sorted(set(paths[held].tolist())))
        wkb = cell_geometries(kind, headers, paths[held], rows[held], cols[held])
        return _scattered(wkb, held, len(row))

    def headers(self, years) -> pa.ListArray:
        """The UDF of aef_headers: per row, the headers table (as `headers_to_table`) as a
        list of structs; `years` is JSON {years, year} (one or a list)."""
        chosen = [_json_years(given) for given in years.to_pylist()]
        for wanted in chosen:
            if wanted is not None:
                self._say_missing_years("aef_headers", wanted)
        lists = [self.session.headers_table(wanted) for wanted in chosen]
        rows = [table.num_rows for table in lists]
        structs = [
            pa.StructArray.from_arrays(
                [column.combine_chunks() for column in table.columns], fields=list(SCHEMA)
            )
            for table in lists
        ]
        return pa.ListArray.from_arrays(
            pa.array(np.concatenate([[0], np.cumsum(rows)]), pa.int32()),
            pa.concat_arrays(structs) if structs else pa.array([], pa.struct(list(SCHEMA))),
        )

    def build_collection(self, output, years) -> pa.Int64Array:
        """The UDF of aef_build_collection, deprecated for aef_headers (a table to COPY)."""
        warnings.warn(
            "aef_build_collection(output) is deprecated: write the headers file with "
            "COPY (FROM aef_headers(years := …)) TO 'headers.parquet'",
            DeprecationWarning,
            stacklevel=2,
        )
        counts = []
        for target, given in zip(output.to_pylist(), years.to_pylist(), strict=True):
            chosen = _json_years(given)
            counts.append(None if target is None else self.session.write_headers(target, chosen))
        return pa.array(counts, type=pa.int64())

    def points_note(self, x, y, crs, year) -> pa.StringArray:
        """Per row (the x and y lists of points in no tile of `year`): why (coverage.py)."""
        tiles = self.session.catalog.tiles()
        return pa.array(
            [
                coverage.points_note(tiles, geo.floats(xs.values), geo.floats(ys.values), c, yr)
                for xs, ys, c, yr in zip(
                    _contiguous(x), _contiguous(y), _ints(crs), _ints(year), strict=True
                )
            ],
            pa.string(),
        )

    def plan_group(self, path, x, y, crs, bands) -> pa.StructArray:
        """The read plan of each group of points of one file (x/y in EPSG `crs`)."""
        x, y = _contiguous(x), _contiguous(y)
        paths = path.to_pylist()
        engine = self.session.engine
        engine.headers.headers_for([p for p in paths if p is not None])  # all files at once
        plans = [
            asdict(
                points.plan(
                    engine,
                    p,
                    geo.floats(xs.values),
                    geo.floats(ys.values),
                    band_indices(names),
                    int(code),
                )
            )
            for p, xs, ys, code, names in zip(
                paths, x, y, _ints(crs), bands.to_pylist(), strict=True
            )
        ]
        return pa.array(plans, type=PLAN_ARROW)

    def options(self, params) -> pa.StructArray:
        """The SQL table functions' parameters, checked (aefsql/options.py): per row, the
        error message to raise, or the resolved years, EPSG code and band names."""
        results = []
        for text in params.to_pylist():
            try:
                o = resolve_json(text)
            except AefsqlError as exc:
                results.append({"error": str(exc)})
            else:
                results.append({"years": list(o.years), "crs": o.crs, "bands": list(o.bands)})
                self._say_missing_years(json.loads(text).get("function"), o.years)
        return pa.array(results, type=OPTIONS_ARROW)

    def _say_empty_area(self, area, years, found) -> None:
        """Warn when some year the catalog has meets no tile of `area` (none among `found`,
        the years the plan found tiles in), and why (outside coverage, swapped lon/lat, the
        wrong crs: `coverage.area_notes`, in SQL's words). Nothing is looked up when every
        year was found, as in almost every query."""
        held = self._unfound_years(years, found)
        if not self.warn_empty or not held:
            return
        for reason in self._area_reasons(area, held):
            warnings.warn(f"area: {reason}", UserWarning, stacklevel=2)

    def _unfound_years(self, years, found) -> list[int]:
        """The years the catalog has that are not among `found`."""
        return [int(y) for y in years if int(y) not in found and self._has_year(int(y))]

    def _area_reasons(self, area, years) -> list[str]:
        """Why `area` meets no tile in `years` (coverage.area_notes, in SQL's words), each
        reason once."""
        notes = coverage.area_notes(self.session.catalog.tiles(), area, years, host="sql")
        return list(dict.fromkeys(note for note in notes.values() if note))

    def _say_uncovered(self, number: int) -> None:
        """Warn, once aef_sample_points' store `number` is read in full, of each year the
        catalog has in which no point lay in a tile (`aef_plan`'s note says why)."""
        empty = [y for y in self.sampled.take_empty_years(number) if self._has_year(y)]
        if empty and self.warn_empty:
            warnings.warn(
                f"aef_sample_points: no point lies in a tile of year(s) "
                f"{', '.join(map(str, empty))}: their bands are NULL; aef_plan's note says "
                "why (swapped lon/lat?, the wrong crs?, outside coverage?)",
                UserWarning,
                stacklevel=2,
            )

    def _say_no_polygon_covered(self, areas, unusable, years, found, unread) -> None:
        """Warn of each year the catalog has in which no polygon got a pixel though some
        polygon was read (a usable area, not refused by max_bytes, its files read: `unread`
        lists the polygon-years that were not), and why, from the first such polygon
        (`coverage.area_notes`: outside coverage, swapped lon/lat, lon/lat numbers with a
        projected crs)."""
        if not self.warn_empty:
            return
        held = self._unfound_years(years, set(found.year[found.pixels > 0].tolist()))
        skipped = set(unusable)
        failed = {(k, int(year)) for k, year, _ in unread}
        first = {
            year: next(
                (
                    k
                    for k, a in enumerate(areas)
                    if k not in skipped and not a.empty and (k, year) not in failed
                ),
                None,
            )
            for year in held
        }
        held = [year for year in held if first[year] is not None]
        if not held:
            return
        why = "; ".join(self._area_reasons(areas[first[held[0]]], held))
        warnings.warn(
            f"aef_zonal: no polygon got a pixel in year(s) {', '.join(map(str, held))}: "
            "their means are NULL" + (f" (the first polygon: {why})" if why else ""),
            UserWarning,
            stacklevel=2,
        )

    def _say_missing_years(self, function: str | None, years) -> None:
        """Warn when the catalog has no tile of some of `years` (see `warn_empty`);
        not for the plans, whose `note` column says it."""
        if not self.warn_empty or function in ("aef_area_plan", "aef_plan"):
            return
        missing = [y for y in years if not self._has_year(int(y))]
        if missing:
            note = coverage.missing_years_note(self.session.catalog.tiles(), missing)
            warnings.warn(f"{function or 'aefsql'}: {note}", UserWarning, stacklevel=2)

    def input_column(self, names, params) -> pa.BooleanArray:
        """True for each input column name a table function may pass through; raises for a
        name it adds or one of aefsql's own (options.check_input_columns). Called from a
        COLUMNS lambda, so while the query binds: DESCRIBE refuses too."""
        for text in set(params.to_pylist()):
            check_input_columns(names.to_pylist(), json.loads(text))
        return pa.array(np.ones(len(names), dtype=bool))

    def value_columns(self, params) -> pa.ListArray:
        """The value columns a call gives: the bands it names (all when NULL), or
        `embedding` (as_vector := true); raises for a bad `bands` or `as_vector` (options).
        Called from a COLUMNS lambda, so while the query binds: the same words as the other
        functions, not DuckDB's "resulted in an empty set of columns"."""
        found = {}
        for text in set(params.to_pylist()):
            given = json.loads(text) if text else {}
            found[text] = value_columns(given.get("bands"), given.get("as_vector", False))
        return pa.array([found[t] for t in params.to_pylist()], pa.list_(pa.string()))

    def point_xy(self, wkb) -> pa.StructArray:
        x, y = geo.points_from_wkb(wkb.to_pylist())
        valid = np.isfinite(x) & np.isfinite(y)
        return pa.StructArray.from_arrays(
            [pa.array(x), pa.array(y)], names=["x", "y"], mask=pa.array(~valid)
        )

    def area_units(self, wkb, box, text, kind, crs, years, bands, max_bytes, level) -> pa.ListArray:
        """Per area (WKB, or a box where the WKB is NULL; `text` and `kind` the value and its
        type where it is neither): the units its plan is made of (aefsql/kernels/pixels.py
        `area_units`: tiles of a year at `level`), each followed by NULLs up to a DuckDB
        vector, so that `unit_chunks` plans one unit a call and the plan held at once stays
        bounded whatever the area; refused past `max_bytes` of pixels x `bands` x years (NULL:
        the default budget) before any header is read."""
        lists = []
        for blob, corners, code, area, wanted, count, budget, at in _area_calls(
            wkb, box, text, kind, crs, years, bands, max_bytes, level
        ):
            # Before any header or block is read (the catalog only when the area is large).
            check_area_size(area, wanted, count, budget, at, self.session.catalog.tiles)
            plan = area_units(self.session, area, wanted, at)
            self._say_empty_area(area, wanted, {u.year for u in plan if u.tiles})
            units = [
                {
                    "year": u.year,
                    "tiles": u.tiles,
                    "stand_in": u.stand_in,
                    "wkb": blob,
                    "box": corners,
                    "crs": code,
                    "level": at,
                }
                for u in plan
            ]
            padded = [None] * (len(units) * DUCKDB_VECTOR_SIZE)
            padded[::DUCKDB_VECTOR_SIZE] = units
            lists.append(padded)
        return pa.array(lists, type=pa.list_(UNIT_ARROW))

    def unit_chunks(self, unit) -> pa.ListArray:
        """Per unit of `area_units` (NULL: padding, no chunk): its chunks, vector-aligned (see
        `_vector_aligned`), in block order within each tile."""
        lists = []
        for u in unit.to_pylist():
            if u is None:
                lists.append(pa.array([], CHUNK_ARROW))
                continue
            corners = u["box"]
            area = area_from(u["wkb"] if u["wkb"] is not None else corners, int(u["crs"]))
            at = u["level"]
            plan = (u["wkb"], tuple(corners or ()), u["crs"], u["year"], at)
            if u["stand_in"] and self._owning.get(plan):
                chunks = _no_chunks()  # a unit of its tiles had chunks: no stand-in
            else:
                unit_of = Unit(u["year"], u["tiles"], u["stand_in"])
                chunks = unit_chunks(self.session, area, unit_of, at)
            self._owned(plan, u["stand_in"], chunks)
            order = _vector_aligned(chunks, chunk_blocks(self.session, chunks, at))
            # DuckDB hands chunk_pixels these chunks a vector at a time, in this order.
            padded = _padded_chunks(chunks, order)
            self.read_ahead.plan(
                [
                    _chunk_slice(padded, slice(start, start + DUCKDB_VECTOR_SIZE))
                    for start in range(0, order.size, DUCKDB_VECTOR_SIZE)
                ]
            )
            lists.append(_chunk_arrow(chunks, order))
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int32)
        items = pa.concat_arrays(lists) if lists else pa.array([], CHUNK_ARROW)
        return pa.ListArray.from_arrays(pa.array(offsets), items)

    def area_plan(self, wkb, box, text, kind, crs, years, bands, max_bytes, level) -> pa.ListArray:
        """Per area (as for `area_units`): per year, what aef_pixels would read, from
        headers only — tiles, blocks, pixels, value_bytes (pixels x bands of int8, what
        max_bytes counts) — and a `note` saying why nothing would come back
        (aefsql/kernels/coverage.py), or why the read would be refused."""
        lists = []
        tiles = self.session.catalog.tiles()
        for _, _, _, area, wanted, count, budget, at in _area_calls(
            wkb, box, text, kind, crs, years, bands, max_bytes, level
        ):
            notes = coverage.area_notes(tiles, area, wanted)
            try:
                check_area_size(area, wanted, count, budget, at, self.session.catalog.tiles)
            except AefsqlError as exc:  # the plan says so, as aef_pixels would refuse
                lists.append([{"plan_year": y, "note": notes[y] or str(exc)} for y in wanted])
                continue
            chunks = area_chunks(self.session, area, wanted, at)
            blocks = chunk_blocks(self.session, chunks, at)
            plans = []
            for year in wanted:
                mine = chunks.year == year
                pixels = int((chunks.col1[mine] - chunks.col0[mine]).sum())
                plans.append(
                    {
                        "plan_year": year,
                        "tiles": len(set(chunks.path[mine].tolist())),
                        "blocks": len(set(zip(chunks.path[mine], blocks[mine], strict=True))),
                        "pixels": pixels,
                        "value_bytes": pixels * count,
                        "note": notes[year],
                    }
                )
            lists.append(plans)
        return pa.array(lists, type=pa.list_(AREA_PLAN_ARROW))

    def chunk_pixels(self, path, year, row, col0, col1, centroid, bands, level) -> pa.ListArray:
        """Per chunk (rows and columns of the tile's `level`): its pixels that belong to its
        tile, where they are and their bands."""
        wanted = band_indices(sorted({n for names in bands.to_pylist() for n in names or ()}))
        chunks, pixels, at = self._read_chunks(path, year, row, col0, col1, centroid, level, wanted)
        rows = {band: k for k, band in enumerate(wanted)}
        n = pixels.row.size
        band_columns = []
        for band in range(len(BAND_NAMES)):
            k = rows.get(band)
            if k is None:
                band_columns.append(pa.nulls(n, pa.int8()))
                continue
            band_columns.append(_int8_column(pixels.values[k], pixels.band_null(k)))
        return self._pixel_lists(chunks, pixels, at, band_columns, PIXEL_ARROW)

    def chunk_vectors(self, path, year, row, col0, col1, centroid, level) -> pa.ListArray:
        """`chunk_pixels` with the 64 bands as one de-quantized FLOAT[64] `embedding`, NULL
        where any band is nodata (aef_pixels(as_vector := true))."""
        every = list(range(len(BAND_NAMES)))
        chunks, pixels, at = self._read_chunks(path, year, row, col0, col1, centroid, level, every)
        vectors, null = pixels.vectors()
        embedding = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1)), len(BAND_NAMES), mask=pa.array(null)
        )
        return self._pixel_lists(chunks, pixels, at, [embedding], PIXEL_VECTOR_ARROW)

    def similarity_query(self, reference, negatives) -> pa.StructArray:
        """aef_similarity's query vector (aefsql/kernels/similarity.py `query_vector`) of
        `reference` and `negatives` as JSON (to_json keeps one embedding and a list of them
        apart; NULL: none), or the error to raise."""
        results = []
        for given, pushed in zip(reference.to_pylist(), negatives.to_pylist(), strict=True):
            try:
                query = query_vector(
                    None if given is None else json.loads(given),
                    None if pushed is None else json.loads(pushed),
                )
            except AefsqlError as exc:
                results.append({"error": str(exc)})
            else:
                results.append({"query": query.astype(np.float32).tolist()})
        return pa.array(results, type=QUERY_ARROW)

    def chunk_similarity(self, path, year, row, col0, col1, centroid, level, query) -> pa.ListArray:
        """`chunk_pixels` with, in place of the bands, each pixel's cosine with `query` (one
        unit vector a call, `similarity_query`'s), NULL where any band is nodata: computed
        from the int8 values (aefsql/kernels/similarity.py)."""
        queries = _contiguous(query)
        known = queries.drop_null()
        if len(known) == 0:  # only padding chunks: no pixel
            unit = np.zeros(len(BAND_NAMES))
        else:
            vectors = known.flatten().to_numpy().reshape(-1, len(BAND_NAMES))
            if not (vectors == vectors[0]).all():
                raise AefsqlError("aef_similarity: one query vector per call")
            unit = vectors[0].astype(np.float64)
        # Computed as each block is decoded, and the next vector's ahead (`Cosines`).
        cosines = Cosines(tuple(unit.astype(np.float32).tolist()))
        chunks, pixels, at = self._read_chunks(
            path, year, row, col0, col1, centroid, level, [], derive=cosines
        )
        similarity = pixels.derived
        column = pa.array(similarity, mask=np.isnan(similarity))
        return self._pixel_lists(chunks, pixels, at, [column], PIXEL_SIMILARITY_ARROW)

    def _read_chunks(self, path, year, row, col0, col1, centroid, level, bands, derive=None):
        """(chunks, their pixels of `bands` (or `derive`d), level) of a call's chunk
        columns."""
        levels = set(_levels(level))
        if len(levels) > 1:
            raise AefsqlError(f"level := must be one value per call, not {sorted(levels)}")
        chunks = Chunks(
            path=_objects(path),
            year=_ints(year),
            row=_ints(row),
            col0=_ints(col0),
            col1=_ints(col1),
            centroid=np.asarray(centroid.to_numpy(zero_copy_only=False), dtype=bool),
        )
        at = levels.pop() if levels else 0
        return chunks, self.read_ahead.pixels(chunks, bands, at, derive=derive), at

    def _pixel_lists(self, chunks, pixels, level, values, arrow_type) -> pa.ListArray:
        """Per chunk, the list of its pixels: where each is (the fields of PIXEL_PLACE_ARROW
        that `arrow_type` has), then `values` (its columns)."""
        place = {
            "location": lambda: pa.array(pixels.location),
            "row": lambda: pa.array(pixels.row, pa.int32()),
            "col": lambda: pa.array(pixels.col, pa.int32()),
            "x": lambda: pa.array(pixels.x),
            "y": lambda: pa.array(pixels.y),
            "xy_crs": lambda: self._chunk_crs(chunks, level).take(pa.array(pixels.chunk)),
        }
        wanted = [f.name for f in arrow_type if f.name in place]
        items = pa.StructArray.from_arrays(
            [*(place[name]() for name in wanted), *values], fields=list(arrow_type)
        )
        offsets = np.searchsorted(pixels.chunk, np.arange(len(chunks.row) + 1))
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items)

    def pixel_lonlat(self, x, y, crs) -> pa.StructArray:
        """lon/lat of pixel centres x/y in their CRS `crs` ('EPSG:32633', as aef_pixels' crs
        column); NULL where any of the three is NULL."""
        # (DuckDB calls this once per vector, ~2,000 times for a 2048² area, on its one
        # pipeline thread: the common case — no NULL, one CRS — takes the short ways.)
        x, y, crs = _contiguous(x), _contiguous(y), _contiguous(crs)
        codes = np.zeros(len(crs), np.int64)
        if len(crs) and crs.null_count == 0 and pc.all(pc.equal(crs, crs[0])).as_py():
            codes[:] = _epsg_code(crs[0].as_py())
        elif len(crs):
            names = crs.dictionary_encode()  # a CRS or two a call: parse each name once
            epsg = np.array([_epsg_code(n) for n in names.dictionary.to_pylist()], np.int64)
            if len(epsg):
                codes = epsg[names.indices.fill_null(0).to_numpy(zero_copy_only=False)]
        lon, lat = self.read_ahead.lonlat(_doubles(x), _doubles(y), codes)
        null = None
        if x.null_count or y.null_count or crs.null_count:
            null = pc.or_(pc.or_(x.is_null(), y.is_null()), crs.is_null())
        return pa.StructArray.from_arrays(
            [pa.array(lon), pa.array(lat)], fields=list(LONLAT_ARROW), mask=null
        )

    def geometry_wanted(self, geometry) -> pa.BooleanArray:
        """True when a table function gives a `geom` column (geometry := 'point' or
        'pixel'), false when geometry is NULL; raises for another value. Called from a
        COLUMNS lambda, so while the query binds: a misspelt value fails even an empty call."""
        kinds = _contiguous(geometry)
        for kind in set(kinds.to_pylist()):
            check_geometry(kind)
        return pc.is_valid(kinds)

    def pixel_geometry(self, path, level, x, y, kind) -> pa.Array:
        """The pixels centred at x/y of file `path`'s `level` (in its CRS), as lon/lat
        geometry: their centres (`kind` 'point') or footprints ('pixel'); NULL where any
        argument is NULL (aefsql/geometry/footprints.py)."""
        path, x, y, kind = (_contiguous(c) for c in (path, x, y, kind))
        levels = _contiguous(level)
        valid = pc.and_(
            pc.and_(
                pc.and_(path.is_valid(), levels.is_valid()), pc.and_(x.is_valid(), y.is_valid())
            ),
            kind.is_valid(),
        )
        at = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
        out = pa.nulls(len(path), pa.binary())
        if at.size == 0:
            return out
        paths = np.asarray(path.take(pa.array(at)).to_pylist(), object)
        (at_level,) = set(_ints(levels.take(pa.array(at))).tolist())  # a parameter: one
        (wanted,) = set(kind.take(pa.array(at)).to_pylist())
        check_geometry(wanted)
        headers = self.session.engine.headers.headers_for(sorted(set(paths.tolist())), at_level)
        found = pixel_geometries(
            wanted,
            headers,
            paths,
            geo.floats(x.take(pa.array(at))),
            geo.floats(y.take(pa.array(at))),
        )
        return _scattered(found, at, len(path))

    def lonlat_point(self, lonlat) -> pa.Array:
        """geometry := 'point' from `pixel_lonlat`'s lon/lat (projected once for lon, lat and
        geom, ahead with the pixels): the same points; NULL where they are."""
        lonlat = _contiguous(lonlat)
        valid = lonlat.is_valid().to_numpy(zero_copy_only=False)
        at = np.flatnonzero(valid)
        picked = lonlat.take(pa.array(at))
        lon, lat = (geo.floats(picked.field(k)) for k in ("lon", "lat"))
        return _scattered(points_wkb(lon, lat), at, len(lonlat))

    def chip_geometry(self, crs, bounds, size, kind) -> pa.Array:
        """aef_chips' chips as lon/lat geometry: their footprints from `chip_bounds` in
        `chip_crs` (`kind` 'pixel'), or the centre of the pixel at row and column size // 2
        (the point's: 'point'); NULL where the chip is."""
        crs, bounds, size, kind = (_contiguous(c) for c in (crs, bounds, size, kind))
        valid = pc.and_(pc.and_(crs.is_valid(), bounds.is_valid()), kind.is_valid())
        at = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
        out = pa.nulls(len(crs), pa.binary())
        if at.size == 0:
            return out
        picked = bounds.take(pa.array(at))
        xmin, ymin, xmax, ymax = (
            geo.floats(picked.field(k)) for k in ("xmin", "ymin", "xmax", "ymax")
        )
        epsg = np.array([_epsg_code(c) for c in crs.take(pa.array(at)).to_pylist()], np.int64)
        (side,) = set(_ints(size.take(pa.array(at))).tolist())
        (wanted,) = set(kind.take(pa.array(at)).to_pylist())
        check_geometry(wanted)
        if (
            wanted == "point"
        ):  # the chip's middle pixel, north-up: columns from xmin, rows from ymax
            width, height = (xmax - xmin) / side, (ymax - ymin) / side
            xmin, ymax = xmin + (side // 2) * width, ymax - (side // 2) * height
            xmax, ymin = xmin + width, ymax - height
        found = rectangle_geometries(wanted, epsg, xmin, ymin, xmax, ymax, segments_for(side))
        return _scattered(found, at, len(crs))

    def grid_geometry(self, cell_id, cell, kind) -> pa.Array:
        """aef_grid's cells (`cell_id`, of the grid `cell`, its JSON) as lon/lat geometry:
        their centres (`kind` 'point') or outlines ('pixel'), each distinct cell once
        (aefsql/kernels/grid.py); NULL where the cell is."""
        cell_id, cell, kind = (_contiguous(c) for c in (cell_id, cell, kind))
        valid = pc.and_(pc.and_(cell_id.is_valid(), cell.is_valid()), kind.is_valid())
        at = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
        if at.size == 0:
            return pa.nulls(len(cell_id), pa.binary())
        (grid,) = {check_cell(json.loads(c)) for c in cell.take(pa.array(at)).to_pylist()}
        (wanted,) = set(kind.take(pa.array(at)).to_pylist())
        check_geometry(wanted)
        ids = cell_id.take(pa.array(at)).to_pylist()
        distinct = sorted(set(ids))
        index = {name: k for k, name in enumerate(distinct)}
        found = grid_geometries(wanted, grid, distinct)
        return _scattered(found.take(pa.array([index[i] for i in ids])), at, len(cell_id))

    def _chunk_crs(self, chunks: Chunks, level: int) -> pa.StringArray:
        """The CRS of each chunk's file ('EPSG:32633'): of its pixels' x/y."""
        paths = sorted(set(chunks.path.tolist()))
        headers = self.session.engine.headers.headers_for(paths, level) if paths else {}
        names = {p: f"EPSG:{int(h.epsg)}" for p, h in headers.items()}
        return pa.array([names[p] for p in chunks.path.tolist()], pa.string())

    def zonal(
        self, rows, wkbs, texts, types, crs, years, level, on_error, max_bytes
    ) -> pa.ListArray:
        """Per call row (the lists of all polygons' row numbers, WKB, and the value as text
        and type where it did not cast to GEOMETRY): each polygon's zonal means in each year
        (see aefsql/kernels/means.py). A row whose geometry is not a usable area fails the call
        naming its row, or with on_error 'null' gets NULL results and its reason. A polygon
        past `max_bytes` of pixels x 64 bands x years (NULL: the default budget) is refused
        before any read."""
        lists = []
        # (A call row's lists stay Arrow, each value made a Python one only as its area is:
        # 10^6 polygons' WKB as Python bytes at once would be ~200 MiB more.)
        for k, (code, wanted, at, mode, budget) in enumerate(
            zip(
                _ints(crs),
                years.to_pylist(),
                _levels(level),
                on_error.to_pylist(),
                max_bytes.to_pylist(),
                strict=True,
            )
        ):
            ids = _list_values(rows, k).to_pylist()
            if not ids:
                lists.append(pa.array([], ZONAL_ARROW))
                continue
            areas, failed = _zonal_areas(
                ids,
                _list_values(wkbs, k),
                _list_values(texts, k),
                _list_values(types, k),
                int(code),
            )
            if failed and mode != "null":
                row, reason = failed[0]
                raise AefsqlError(f"aef_zonal: row {row}: {reason}")
            # Every row has its area (an empty one for a NULL or unusable geometry), so that
            # zonal_means' "polygon k" is the k-th row; the unusable ones' entries are left out.
            if mode == "null":  # a file that cannot be read fails its polygon-years only
                found, unread = isolated_zonal_means(self.session, areas, wanted, at, budget)
            else:
                found, unread = zonal_means(self.session, areas, wanted, at, budget), []
            bad_rows = {row for row, _ in failed}
            unusable = [k for k, row in enumerate(ids) if row in bad_rows]
            if unusable:
                found = entries_of(found, ~np.isin(found.polygon, unusable))
            failed = [(row, year, reason) for row, reason in failed for year in wanted]
            failed += [(ids[k], year, reason) for k, year, reason in unread]
            self._say_no_polygon_covered(areas, unusable, wanted, found, unread)
            embedding = _embedding_column(found.means)
            lists.append(
                pa.StructArray.from_arrays(
                    [
                        pa.array(np.asarray(ids, np.int64)[found.polygon]),
                        pa.array(found.year, pa.int32()),
                        pa.array(found.pixels),
                        pa.array(found.nodata_pixels),
                        pa.array(found.centroid_pixel),
                        embedding,
                        pa.nulls(len(found.year), pa.string()),
                    ],
                    fields=list(ZONAL_ARROW),
                )
            )
            if failed:  # one list per call row: the failed entries after the others
                lists[-1] = pa.concat_arrays([lists[-1], _failed_zonal(failed)])
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int32)
        items = pa.concat_arrays(lists) if lists else pa.array([], ZONAL_ARROW)
        return pa.ListArray.from_arrays(pa.array(offsets), items)

    def zonal_status(self, pixels, nodata_pixels, aef_error, year) -> pa.StringArray:
        """aef_zonal's `status := true`: the word of each (polygon, year) from its counts and
        aef_error (coverage.zonal_status_codes)."""
        years = _ints(year)
        return status_words(
            coverage.zonal_status_codes(
                _counts(pixels),
                _counts(nodata_pixels),
                _present(aef_error),
                years,
                self._missing(years),
            )
        )

    def chip_status(self, path, valid_pixels, size, aef_error, year) -> pa.StringArray:
        """aef_chips' `status := true`: the word of each (point, year) from the tile holding
        its centre (`path`), its valid pixels and aef_error (coverage.chip_status_codes)."""
        years = _ints(year)
        return status_words(
            coverage.chip_status_codes(
                _present(path),
                _counts(valid_pixels),
                _ints(size),
                _present(aef_error),
                years,
                self._missing(years),
            )
        )

    def _missing(self, years: np.ndarray) -> list[int]:
        """The years among `years` the catalog has no tile of."""
        return [y for y in np.unique(years).tolist() if not self._has_year(y)]

    def grid(self, wkb, box, text, kind, crs, years, bands, max_bytes, level, cell) -> pa.ListArray:
        """Per area (as for `area_units`; `cell` its JSON): the mean embedding of its pixels
        in each grid cell holding one, per year (aefsql/kernels/grid.py). The cell is
        checked first, then the area's size and the cells' against `max_bytes` (pixels x 64
        bands x years of int8, and cells x 64 x years of float64 sums; NULL: each one's
        default budget), before any header is read."""
        cells = [check_cell(None if c is None else json.loads(c)) for c in cell.to_pylist()]
        lists = []
        for one, budget, (*_, area, wanted, _, _, at) in zip(
            cells,
            max_bytes.to_pylist(),
            _area_calls(wkb, box, text, kind, crs, years, bands, max_bytes, level),
            strict=True,
        ):
            found = grid_means(self.session, area, one, wanted, at, max_bytes=budget)
            means = found.means
            self._say_empty_area(area, wanted, set(means.year[means.pixels > 0].tolist()))
            embedding = _embedding_column(means.means)
            lists.append(
                pa.StructArray.from_arrays(
                    [
                        pa.array(found.cell, pa.string()),
                        pa.array(means.year, pa.int32()),
                        pa.array(means.pixels),
                        pa.array(means.nodata_pixels),
                        embedding,
                    ],
                    fields=list(GRID_ARROW),
                )
            )
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int32)
        items = pa.concat_arrays(lists) if lists else pa.array([], GRID_ARROW)
        return pa.ListArray.from_arrays(pa.array(offsets), items)

    def chip_plan(self, count, size, bands, max_bytes) -> pa.StructArray:
        """aef_chips' budget, before anything is read: per row, the error to raise, or how
        many chips one call may read (`per_call`) in each `period` rows of its input (the
        rest are NULL padding, so that no DuckDB vector holds more)."""
        results = []
        for n, s, b, limit in zip(
            count.to_pylist(),
            size.to_pylist(),
            bands.to_pylist(),
            max_bytes.to_pylist(),
            strict=True,
        ):
            try:
                s = int(s) if s is not None and float(s).is_integer() else s
                per_call = min(chips_per_call(n or 0, s, b or 0, limit), DUCKDB_VECTOR_SIZE)
            except AefsqlError as exc:
                results.append({"error": str(exc)})
            else:
                results.append({"per_call": per_call, "period": DUCKDB_VECTOR_SIZE})
        return pa.array(
            results,
            type=pa.struct(
                [("error", pa.string()), ("per_call", pa.int32()), ("period", pa.int32())]
            ),
        )

    def chip(self, path, year, x, y, crs, bands, size, level, on_error) -> pa.StructArray:
        """aef_chips' UDF: per row, the chip centred on (x, y) in the tile `path` (NULL where
        the path is NULL). One call reads its rows' chips together, grouped by year and CRS,
        so chips of one tile share their block reads (aefsql/kernels/chips.py)."""
        paths = _objects(path)
        n = len(paths)
        live = np.flatnonzero(paths != None)  # noqa: E711 (elementwise)
        if live.size == 0:
            return pa.nulls(n, CHIP_ARROW)
        first = int(live[0])
        names = bands[first].as_py()
        wanted = band_indices(names)
        sizes, levels = _ints(size), _levels(level)
        mode = on_error[first].as_py()
        years, codes, xs, ys = _ints(year), _ints(crs), geo.floats(x), geo.floats(y)
        pieces, placed = [pa.nulls(n - live.size, CHIP_ARROW)], [np.setdiff1d(np.arange(n), live)]
        keys = np.array([f"{years[i]} {codes[i]}" for i in range(n)], dtype=object)
        for members in group_indices(keys, live).values():
            k = int(members[0])
            read = partial(
                read_chips,
                self.session,
                crs=int(codes[k]),
                year=int(years[k]),
                size=int(sizes[k]),
                bands=wanted,
                level=levels[k],
            )
            for rows, result in file_by_file(
                lambda rows, read=read: read(paths[rows], xs[rows], ys[rows]), paths, members, mode
            ):
                pieces.append(_chip_arrow(result, len(rows)))
                placed.append(rows)
        position = np.empty(n, dtype=np.int64)
        position[np.concatenate(placed)] = np.arange(n)
        return pa.concat_arrays(pieces).take(pa.array(position))

    def change_units(
        self, wkb, box, text, kind, crs, years, bands, max_bytes, level
    ) -> pa.ListArray:
        """aef_change's plan: per area (as for `area_units`), its units (aefsql/kernels/
        change.py: one tile position each, then the centroid's stand-in), each followed by
        NULLs up to a DuckDB vector so that `change_chunks` plans one a call; refused past
        `max_bytes` of pixels x `bands` x years (NULL: the default budget) before any header
        is read."""
        lists = []
        for blob, corners, code, area, wanted, count, budget, at in _area_calls(
            wkb, box, text, kind, crs, years, bands, max_bytes, level
        ):
            check_area_size(area, wanted, count, budget, at, self.session.catalog.tiles)
            positions = change.tile_positions(self.session, area, wanted, at)
            # (a pair comes back wherever any year has a tile: said only when none has)
            self._say_empty_area(area, wanted, set(wanted) if len(positions.paths) else set())
            units = [
                {
                    "position": u.position,
                    "stand_in": u.stand_in,
                    "wkb": blob,
                    "box": corners,
                    "crs": code,
                    "years": list(wanted),
                    "level": at,
                }
                for u in change.change_units(positions, area)
            ]
            padded = [None] * (len(units) * DUCKDB_VECTOR_SIZE)
            padded[::DUCKDB_VECTOR_SIZE] = units
            lists.append(padded)
        return pa.array(lists, type=pa.list_(CHANGE_UNIT_ARROW))

    def change_chunks(self, unit) -> pa.ListArray:
        """Per unit of `change_units` (NULL: padding, no chunk): its chunks, each with its
        file in every year, vector-aligned (`_vector_aligned`) in block order."""
        lists = []
        for u in unit.to_pylist():
            if u is None:
                lists.append(pa.array([], CHANGE_CHUNK_ARROW))
                continue
            area = area_from(u["wkb"] if u["wkb"] is not None else u["box"], int(u["crs"]))
            at = u["level"]
            plan = (u["wkb"], tuple(u["box"] or ()), u["crs"], tuple(u["years"]), at)
            positions = change.tile_positions(self.session, area, u["years"], at)
            if u["stand_in"] and self._owning.get(plan):
                chunks = _no_chunks()  # a position had chunks: no stand-in
                paths = np.zeros((0, len(positions.years)), object)
            else:
                unit_of = change.ChangeUnit(u["position"], u["stand_in"])
                chunks, paths = change.unit_chunks(self.session, positions, area, unit_of, at)
            self._owned(plan, u["stand_in"], chunks)
            order = _vector_aligned(chunks, chunk_blocks(self.session, chunks, at))
            # DuckDB hands change_pixels these chunks a vector at a time, in this order: the
            # next vectors' changes are computed while it consumes one.
            batches = _change_batches(chunks, paths, order)
            self.read_ahead.plan(batches, key=_change_batch_key)
            lists.append(_change_chunk_arrow(chunks, paths, order))
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int32)
        items = pa.concat_arrays(lists) if lists else pa.array([], CHANGE_CHUNK_ARROW)
        return pa.ListArray.from_arrays(pa.array(offsets), items)

    def change_pixels(self, paths, years, row, col0, col1, centroid, level) -> pa.ListArray:
        """Per chunk (its file in each of `years`, NULL where none): a row per pixel and pair
        of consecutive years, with the cosine similarity of its embeddings in the two
        (aefsql/kernels/change.py: each year's blocks read once, no join)."""
        paths, years = _contiguous(paths), _contiguous(years)
        distinct = {tuple(y) for y in years.to_pylist() if y is not None}
        if len(distinct) > 1:
            raise AefsqlError(f"years := must be one list per call, not {sorted(distinct)}")
        wanted = list(distinct.pop()) if distinct else []
        levels = set(_levels(level))
        if len(levels) > 1:
            raise AefsqlError(f"level := must be one value per call, not {sorted(levels)}")
        at = levels.pop() if levels else 0
        n = len(row)
        files = np.full((n, len(wanted)), None, dtype=object)
        if n and wanted:
            files[:] = np.asarray(paths.flatten().to_pylist(), dtype=object).reshape(n, -1)
        chunks = Chunks(
            path=_grid_paths(files),
            year=np.full(n, change.EVERY_YEAR, np.int64),
            row=_ints(row),
            col0=_ints(col0),
            col1=_ints(col1),
            centroid=np.asarray(centroid.to_numpy(zero_copy_only=False), dtype=bool),
        )

        def compute(batch: tuple[Chunks, np.ndarray]) -> change.Changes:
            return change.chunk_changes(self.session, *batch, wanted, at)

        # Computed ahead when `change_chunks` planned this vector (`_change_batches`).
        found = self.read_ahead.computed(
            (chunks, files), ("change", tuple(wanted), at), compute, key=_change_batch_key
        )
        pairs = max(len(wanted) - 1, 0)
        names = pa.array([f"EPSG:{int(e)}" for e in found.epsg], pa.string())
        similarity = found.similarity.reshape(-1)  # pixel by pixel, its pairs together

        def each_pair(values: np.ndarray) -> np.ndarray:  # (one pair: no copy)
            return values if pairs == 1 else np.repeat(values, pairs)

        items = pa.StructArray.from_arrays(
            [
                pa.array(each_pair(found.location)),
                pa.array(each_pair(found.x)),
                pa.array(each_pair(found.y)),
                names.take(pa.array(each_pair(found.chunk))),
                pa.array(np.tile(np.asarray(wanted[:-1], np.int32), found.chunk.size)),
                pa.array(np.tile(np.asarray(wanted[1:], np.int32), found.chunk.size)),
                pa.array(similarity, mask=np.isnan(similarity)),
            ],
            fields=list(CHANGE_ARROW),
        )
        offsets = np.searchsorted(found.chunk, np.arange(n + 1)) * pairs
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items)

    def index_file(self, calls) -> pa.StringArray:
        """The normalized catalog aef_index() reads. DuckDB calls this when it creates the
        macro too: then an empty catalog stands in, so that registering reads nothing."""
        creating = getattr(self._install_state, "creating", False)
        path = empty_index_file() if creating else self.session.catalog.index_file()
        return pa.array([path] * len(calls), pa.string())


def _embedding_column(means: np.ndarray) -> pa.FixedSizeListArray:
    """`embedding FLOAT[64]` of means (entries, 64): NULL where an entry has no valid pixel
    (its means are NaN)."""
    return pa.FixedSizeListArray.from_arrays(
        pa.array(means.astype(np.float32).ravel()),
        len(BAND_NAMES),
        mask=pa.array(np.isnan(means[:, 0]) if len(means) else np.zeros(0, bool)),
    )


def _list_values(lists: pa.ListArray, k: int) -> pa.Array:
    """The values of list `k` of `lists` (none for a NULL list), without copying them."""
    return lists[k].values if lists[k].is_valid else pa.array([], lists.type.value_type)


def _zonal_areas(ids, blobs: pa.Array, texts: pa.Array, kinds: pa.Array, code: int):
    """The area of each row (empty for a NULL geometry or an unusable one), and (row, reason)
    of the unusable, in row order: a value that did not cast to GEOMETRY (with DuckDB's own
    message, which gives the parse position), a geometry that is not an area (a
    LINESTRING…), or vertices that cannot be what EPSG `code` says. Each value is made a
    Python one as its row comes."""
    nothing = Area((), code)
    areas, failed = [], []
    for row, one, words, sort in zip(ids, blobs, texts, kinds, strict=True):
        blob, text, kind = one.as_py(), words.as_py(), sort.as_py()
        try:
            if blob is None and text is not None:
                raise AefsqlError(_geometry_cast_error(text, kind))
            areas.append(nothing if blob is None else area_from(blob, code))
        except AefsqlError as exc:
            areas.append(nothing)
            failed.append((row, str(exc)))
    if code != geo.WGS84:
        # Vertices PROJ cannot map fail the whole batch: find whose they are.
        try:
            projected_all(areas, geo.WGS84)
        except AefsqlError:
            for k, area in enumerate(areas):
                try:
                    projected_all([area], geo.WGS84)
                except AefsqlError as exc:
                    areas[k] = nothing
                    failed.append((ids[k], str(exc)))
            failed.sort()
    return areas, failed


def _area_calls(wkb, box, text, kind, crs, years, bands, max_bytes, level):
    """The rows of an area UDF's call (aef_pixels' `area_units`, `area_plan`): per row, its
    WKB, box and EPSG code as given, the area they make, its years, band count, budget
    (NULL: the default) and level."""
    budgets = max_bytes.cast(pa.int64()).fill_null(STREAMED_BYTES).to_numpy()
    for blob, corners, raw, typ, code, wanted, count, budget, at in zip(
        wkb.to_pylist(),
        box.to_pylist(),
        text.to_pylist(),
        kind.to_pylist(),
        _ints(crs),
        years.to_pylist(),
        _ints(bands),
        budgets,
        _levels(level),
        strict=True,
    ):
        area = _area_argument(blob, corners, raw, typ, int(code))
        yield blob, corners, int(code), area, wanted, int(count), int(budget), at


def _area_argument(blob, corners, text, kind, code: int) -> Area:
    """aef_pixels' and aef_area_plan's `area`: from its WKB, or its box where the WKB is
    NULL; a value that is neither fails with DuckDB's own message (`text` and `kind`: the
    value and its type where it did not cast to GEOMETRY, as for aef_zonal's rows)."""
    if blob is None and corners is None:
        why = "none of them (or NULL)" if text is None else _geometry_cast_error(text, kind)
        raise AefsqlError(
            f"an area is a GEOMETRY, WKB, WKT or [west, south, east, north]; this one is {why}"
        )
    return area_from(blob if blob is not None else corners, code)


def _failed_zonal(failed) -> pa.StructArray:
    """The entries that could not be made, (row, year, reason): NULL results, and why."""
    return pa.array(
        [{"row": row, "year": year, "aef_error": reason} for row, year, reason in failed],
        ZONAL_ARROW,
    )


def _geometry_cast_error(text: str, kind: str | None) -> str:
    """DuckDB's message for CAST(value AS GEOMETRY), `value` given as text of its type (a
    BLOB's text is its escaped bytes): try_cast in SQL gives NULL, and no position."""
    source = kind if kind in ("VARCHAR", "BLOB") else "VARCHAR"
    con = duckdb.connect()
    try:
        con.execute(f"SELECT CAST(CAST(? AS {source}) AS GEOMETRY)", [text])
    except duckdb.Error as exc:
        return str(exc).splitlines()[0]
    finally:
        con.close()
    return f"{kind or 'the value'} {text[:60]!r} is not a geometry"


def _chip_arrow(result, n: int) -> pa.StructArray:
    """CHIP_ARROW values of `n` rows: their Chips (NULL where the point is in no raster), or
    the message of the file that failed them (NULL chip)."""
    if isinstance(result, str):
        empty = [pa.nulls(n, field.type) for field in CHIP_ARROW][:-1]
        return pa.StructArray.from_arrays(
            [*empty, pa.array([result] * n, pa.string())], fields=list(CHIP_ARROW)
        )
    chips = result
    count, bands, size = len(chips.epsg), len(chips.bands), chips.size

    def lists(child, length: int, each: int, mask=None):
        offsets = pa.array(np.arange(length + 1, dtype=np.int64) * each, pa.int32())
        return pa.ListArray.from_arrays(offsets, child, mask=mask)

    flat = pa.array(chips.values.reshape(-1))
    rows = lists(flat, count * bands * size, size)
    planes = lists(rows, count * bands, size)
    missing = pa.array(~chips.found)
    chip = lists(planes, count, bands, mask=missing)
    means, valid = chips.means()
    xmin, ymin, xmax, ymax = chips.bounds().T
    bounds = pa.StructArray.from_arrays(
        [pa.array(v) for v in (xmin, ymin, xmax, ymax)],
        names=["xmin", "ymin", "xmax", "ymax"],
        mask=missing,
    )
    embedding = pa.FixedSizeListArray.from_arrays(
        pa.array(means.astype(np.float32).ravel(), mask=np.isnan(means).ravel()),
        len(BAND_NAMES),
        mask=pa.array(valid == 0),
    )
    crs = pa.array([f"EPSG:{int(e)}" if e else None for e in chips.epsg], pa.string())
    return pa.StructArray.from_arrays(
        [
            chip,
            crs,
            bounds,
            pa.array(np.where(chips.found, valid, 0), mask=~chips.found),
            embedding,
            pa.nulls(count, pa.string()),
        ],
        fields=list(CHIP_ARROW),
    )


def _padded_chunks(chunks: Chunks, order: np.ndarray) -> Chunks:
    """The chunks in `order` (`_vector_aligned`): a padding chunk is empty (no pixel) and
    stands on the next chunk's file, row and year."""
    real = order >= 0
    at = np.where(real, order, -order - 1)
    return Chunks(
        path=chunks.path[at],
        year=chunks.year[at],
        row=chunks.row[at],
        col0=np.where(real, chunks.col0[at], 0),
        col1=np.where(real, chunks.col1[at], 0),
        centroid=chunks.centroid[at],
    )


def _chunk_slice(chunks: Chunks, part: slice) -> Chunks:
    return Chunks(*(getattr(chunks, f.name)[part] for f in fields(Chunks)))


def _chunk_arrow(chunks: Chunks, order: np.ndarray) -> pa.StructArray:
    """The chunks in `order` (`_padded_chunks`) as Arrow, built column by column from numpy
    (a Python dict a chunk took ~650 bytes: 4.9 GB for 7.5 M chunks)."""
    if order.size == 0:
        return pa.array([], CHUNK_ARROW)
    chunks = _padded_chunks(chunks, order)
    # Paths come in runs (a tile's chunks together): one dictionary entry a run.
    starts = np.flatnonzero(np.r_[True, chunks.path[1:] != chunks.path[:-1]])
    names: dict[str, int] = {}
    heads = np.array([names.setdefault(p, len(names)) for p in chunks.path[starts]], np.int32)
    codes = np.repeat(heads, np.diff(np.r_[starts, chunks.path.size]))
    path = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(list(names), pa.string())).cast(
        pa.string()
    )
    return pa.StructArray.from_arrays(
        [
            path,
            pa.array(chunks.year, pa.int32()),
            pa.array(chunks.row, pa.int32()),
            pa.array(chunks.col0, pa.int32()),
            pa.array(chunks.col1, pa.int32()),
            pa.array(chunks.centroid),
        ],
        fields=list(CHUNK_ARROW),
    )


def _change_chunk_arrow(chunks: Chunks, paths: np.ndarray, order: np.ndarray) -> pa.StructArray:
    """aef_change's chunks in `order` (`_vector_aligned`; a padding chunk is empty), each
    with its file in every year (`paths`, object (chunks, years), None where none)."""
    if order.size == 0:
        return pa.array([], CHANGE_CHUNK_ARROW)
    real = order >= 0
    at = np.where(real, order, -order - 1)
    years = paths.shape[1]
    # One tile position a unit: the same few paths in every chunk, encoded once each.
    names: dict[str, int] = {}
    codes = np.array(
        [-1 if p is None else names.setdefault(p, len(names)) for p in paths.reshape(-1)],
        np.int32,
    ).reshape(paths.shape)[at]
    flat = pa.DictionaryArray.from_arrays(
        pa.array(codes.reshape(-1), mask=codes.reshape(-1) < 0),
        pa.array(list(names), pa.string()),
    ).cast(pa.string())
    files = pa.ListArray.from_arrays(pa.array(np.arange(at.size + 1, dtype=np.int32) * years), flat)
    return pa.StructArray.from_arrays(
        [
            files,
            pa.array(chunks.row[at], pa.int32()),
            pa.array(np.where(real, chunks.col0[at], 0), pa.int32()),
            pa.array(np.where(real, chunks.col1[at], 0), pa.int32()),
            pa.array(chunks.centroid[at]),
        ],
        fields=list(CHANGE_CHUNK_ARROW),
    )


def _no_chunks() -> Chunks:
    empty = np.zeros(0, np.int64)
    return Chunks(np.zeros(0, object), empty, empty, empty, empty, np.zeros(0, bool))


def _grid_paths(files: np.ndarray) -> np.ndarray:
    """aef_change's chunk path: the first of its files over the years (its grid's)."""
    return np.array([next((p for p in f if p is not None), "") for f in files], object)


def _change_batches(chunks: Chunks, paths: np.ndarray, order: np.ndarray) -> list:
    """aef_change's (chunks, files) of each DuckDB vector of the chunks in `order`, as
    `change_pixels` gets them (`_change_chunk_arrow`'s)."""
    padded = _padded_chunks(chunks, order)
    at = np.where(order >= 0, order, -order - 1)
    files = paths[at] if order.size else paths
    batches = []
    for start in range(0, order.size, DUCKDB_VECTOR_SIZE):
        part = slice(start, start + DUCKDB_VECTOR_SIZE)
        mine = files[part]
        batch = Chunks(
            path=_grid_paths(mine),
            year=np.full(len(mine), change.EVERY_YEAR, np.int64),
            row=padded.row[part],
            col0=padded.col0[part],
            col1=padded.col1[part],
            centroid=padded.centroid[part],
        )
        batches.append((batch, mine))
    return batches


def _change_batch_key(batch: tuple[Chunks, np.ndarray]) -> bytes:
    """A digest of aef_change's chunks and their files in every year."""
    chunks, files = batch
    files = "\0".join(map(str, np.asarray(files).reshape(-1).tolist())).encode()
    return batch_key(chunks) + hashlib.blake2b(files, digest_size=16).digest()


def _vector_aligned(chunks: Chunks, blocks: np.ndarray) -> np.ndarray:
    """Chunk indices with padding (-1 - the next chunk's index) so that a block's chunks
    start a DuckDB vector whenever they would straddle two: a scalar UDF gets one vector
    per call, and a block split between two calls would be fetched and decoded twice."""
    n = blocks.size
    if n == 0:
        return np.zeros(0, np.int64)
    key_changes = (
        (blocks[1:] != blocks[:-1])
        | (chunks.year[1:] != chunks.year[:-1])
        | (chunks.path[1:] != chunks.path[:-1])
    )
    starts = np.concatenate([[0], np.flatnonzero(key_changes) + 1])
    sizes = np.diff(np.append(starts, n))
    out, at = [], 0
    for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
        used = at % DUCKDB_VECTOR_SIZE
        if used and used + size > DUCKDB_VECTOR_SIZE and size <= DUCKDB_VECTOR_SIZE:
            pad = DUCKDB_VECTOR_SIZE - used
            out.append(np.full(pad, -1 - start, np.int64))
            at += pad
        out.append(np.arange(start, start + size, dtype=np.int64))
        at += size
    return np.concatenate(out)


def _doubles(column: pa.Array) -> np.ndarray:
    """`geo.floats`, read-only and without a copy when the column is DOUBLE without NULL."""
    if column.type == pa.float64() and column.null_count == 0:
        return column.to_numpy()
    return geo.floats(column)


def _epsg_code(name: str) -> int:
    """The EPSG code of a CRS name of aef_pixels' crs column ('EPSG:32633')."""
    return int(name.split(":")[1])


def _int8_column(values: np.ndarray, null: np.ndarray | None) -> pa.Array:
    """An int8 Arrow column of `values`, NULL where `null` (None: nowhere), sharing their
    memory: the validity bits packed by numpy (`pa.array(mask=)` took ten times as long, a
    fifth of a second of DuckDB's one pipeline thread for a 2048² area's 64 bands)."""
    values = np.ascontiguousarray(values, np.int8)
    if null is None:
        return pa.array(values)
    valid = np.packbits(~null, bitorder="little")
    return pa.Array.from_buffers(
        pa.int8(), values.size, [pa.py_buffer(valid), pa.py_buffer(values)]
    )


def _contiguous(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _scattered(values: pa.Array, at: np.ndarray, n: int) -> pa.Array:
    """`values` at positions `at` of n, NULL elsewhere."""
    if at.size == n:
        return values
    where = np.full(n, -1, np.int64)
    where[at] = np.arange(at.size)
    return values.take(pa.array(where, mask=where < 0))


def _counts(column) -> np.ndarray:
    """An integer Arrow column as int64, NULL as 0 (no pixel counted)."""
    return _ints(pc.fill_null(column, 0))


def _present(column) -> np.ndarray:
    """bool: which items of an Arrow column are not NULL."""
    return column.is_valid().to_numpy(zero_copy_only=False)


def _ints(column) -> np.ndarray:
    """An integer Arrow column (never NULL here: the macros always pass one) as int64."""
    return np.asarray(column.cast(pa.int64()).to_numpy(zero_copy_only=False))


def _batches(counts: np.ndarray, most: int):
    """(first, end) ranges of consecutive groups of `counts` items, each of at most `most`
    items unless one group alone has more."""
    first, total = 0, 0
    for k, count in enumerate(counts.tolist()):
        if k > first and total + count > most:
            yield first, k
            first, total = k, 0
        total += count
    if first < len(counts):
        yield first, len(counts)


def _band_columns(samples: Samples) -> list[pa.Array]:
    """The A00..A63 columns of `samples` (NULL: not covered, nodata, or a band not asked
    for), as `_struct`'s fields; every band's validity at once, for the ~500 calls of a
    10^6-row aef_sample_points."""
    n = samples.covered.size
    with np.errstate(invalid="ignore"):
        valid = (
            samples.covered[:, None]
            & (np.asarray(samples.bands)[None, :] < samples.band_count[:, None])
            & (samples.values != samples.nodata[:, None])
        )
    values = np.ascontiguousarray(samples.values.T)  # band-major: one buffer a band
    bits = np.packbits(np.ascontiguousarray(valid.T), axis=1, bitorder="little")
    column_of = {band: k for k, band in enumerate(samples.bands)}
    missing = pa.nulls(n, pa.int8())
    return [
        missing
        if (k := column_of.get(band)) is None
        else pa.Array.from_buffers(pa.int8(), n, [pa.py_buffer(bits[k]), pa.py_buffer(values[k])])
        for band in range(len(BAND_NAMES))
    ]


def _int32s(column) -> np.ndarray:
    """An INTEGER Arrow column as int32 (no copy without NULLs), NULL as -1 (none)."""
    column = column.fill_null(-1) if column.null_count else column
    return np.asarray(column.cast(pa.int32()).to_numpy(zero_copy_only=False))


def _levels(column) -> list[int]:
    """A level := column as ints, checked; NULL means 0 (full resolution)."""
    levels = column.cast(pa.int64()).fill_null(0).to_pylist()
    for level in levels:
        check_level(level)
    return levels


def _objects(column) -> np.ndarray:
    return np.asarray(column.to_pylist(), dtype=object)


def _struct(samples: Samples, bands: list[int] | None = None) -> pa.StructArray:
    """Arrow STRUCT(A00..A63) of samples of `bands` (default all): other bands, nodata and
    uncovered points are NULL."""
    n = samples.covered.size
    bands = range(len(BAND_NAMES)) if bands is None else bands
    columns = {band: k for k, band in enumerate(bands)}
    children = []
    for band in range(len(BAND_NAMES)):
        k = columns.get(band)
        if k is None:
            children.append(pa.nulls(n, pa.int8()))
        else:
            children.append(pa.array(samples.values[:, k], mask=~samples.band_valid(k)))
    return pa.StructArray.from_arrays(
        children, fields=list(EMBEDDING_ARROW), mask=pa.array(~samples.covered)
    )


def _json_years(given: str | None) -> tuple[int, ...] | None:
    """The years of a JSON {years, year} argument (one or a list each); None for all."""
    given = json.loads(given) if given else {}
    if given.get("years") is None and given.get("year") is None:
        return None
    return year_list(given.get("years"), given.get("year"))
