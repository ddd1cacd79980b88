"""The STAC-GeoParquet form of the AEF index (`aef_index_stac_geoparquet.parquet`, published
beside the narrow `aef_index.parquet`): one STAC item a row, read here into the narrow index's
columns, so that one normalisation and one set of checks (`index.normalize`) serve both forms.

What an item holds, as the published file's public readers read it:
- the COG's URL in `assets.data.href` (the `data` asset);
- the year as the UTC year of `datetime` (1 January of the year), or of `start_datetime` for
  an item whose `datetime` is NULL (STAC's way of giving a range);
- the tile's CRS in `proj:code` ('EPSG:32633', projection extension v2) or `proj:epsg`
  (32633, v1);
- its lon/lat box in `bbox`: a struct xmin/ymin/xmax/ymax as stac-geoparquet writes it, or a
  list [west, south, east, north] (6 numbers with heights);
- its footprint in `geometry` (WKB, lon/lat), and its bounds in its own CRS in `proj:bbox`
  where the item has them.
The item `id` is a string, not the narrow index's number: fid is the row number, as for a
narrow catalog without one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import CatalogError
from .schema import UTM_SIDES, WGS84_SIDES, CatalogColumns

ASSET = "data"
HREF = f"assets.{ASSET}.href"
DATETIMES = ("datetime", "start_datetime")  # the first non-NULL gives the year
CRS_FIELDS = ("proj:code", "proj:epsg")  # the first present gives the CRS
BBOX, UTM_BBOX, GEOMETRY = "bbox", "proj:bbox", "geometry"
# The corners a box list holds: 4 numbers (west, south, east, north), or 6 with heights
# (west, south, low, east, north, high).
_CORNERS = {4: (0, 1, 2, 3), 6: (0, 1, 3, 4)}
_BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
# The narrow columns `flatten` gives as strings or bytes (measured by `index.check_decoded`).
TEXT_NAMES = ("path", "crs", "geom")


def is_stac(schema: pa.Schema) -> bool:
    """True for a STAC-GeoParquet catalog: its items' `assets` are a struct column, which no
    narrow index has."""
    i = schema.get_field_index("assets")
    return i >= 0 and pa.types.is_struct(schema.field(i).type)


@dataclass(frozen=True)
class StacLayout:
    """Which STAC fields a catalog has, and how each narrow column is read from them."""

    datetimes: tuple[str, ...]  # of DATETIMES, those present
    crs: str | None  # of CRS_FIELDS, the first present
    utm_bbox: bool  # proj:bbox present
    geometry: bool

    @property
    def columns(self) -> CatalogColumns:
        """The roles, by the narrow names `flatten` gives them."""
        utm = {side: side for side in UTM_SIDES} if self.utm_bbox else {}
        return CatalogColumns(
            year="year",
            path="path",
            **{side: side for side in WGS84_SIDES},
            crs="crs" if self.crs else None,
            geom="geom" if self.geometry else None,
            **utm,
        )

    def _sources_of(self, name: str) -> tuple[str, ...]:
        if name == "year":
            return self.datetimes
        if name in WGS84_SIDES:
            return (BBOX,)
        if name in UTM_SIDES:
            return (UTM_BBOX,)
        return {"path": (HREF,), "crs": (self.crs,), "geom": (GEOMETRY,)}[name]

    def sources(self, names: list[str]) -> list[str]:
        """The parquet columns (leaf paths for the asset) to read for these narrow columns."""
        return list(dict.fromkeys(s for name in names for s in self._sources_of(name)))

    def text_sources(self, names: list[str]) -> list[str]:
        """Of `sources(names)`, the string and binary leaves: read as dictionaries, their
        expanded size is checked before they are expanded (`index.check_decoded`)."""
        text = {HREF, GEOMETRY, "proj:code"}
        return [s for s in self.sources(names) if s in text]

    def flatten(self, table: pa.Table, names: list[str], source: str, row_offset: int) -> pa.Table:
        """`table` (read with `sources(names)`) as the narrow columns `names`. Dictionary
        columns stay dictionaries. `row_offset`: catalog rows before `table`'s first, for
        the rows errors name (1-based)."""
        built = {}
        for name in names:
            if name == "year":
                built[name] = _years(table, self.datetimes, source)
            elif name == "path":
                built[name] = pc.struct_field(table["assets"], [ASSET, "href"])
            elif name == "crs":
                built[name] = _crs(table[self.crs])
            elif name == "geom":
                built[name] = table[GEOMETRY]
            elif name in WGS84_SIDES:
                i = WGS84_SIDES.index(name)
                built[name] = _box_side(table[BBOX], i, BBOX, source, row_offset)
            else:
                i = UTM_SIDES.index(name)
                built[name] = _box_side(table[UTM_BBOX], i, UTM_BBOX, source, row_offset)
        return pa.table(built)


def stac_layout(schema: pa.Schema, source: str) -> StacLayout:
    """The layout of a STAC-GeoParquet catalog's schema; CatalogError naming the field that
    is missing or of a type aefsql cannot read."""

    def field(name: str) -> pa.DataType | None:
        i = schema.get_field_index(name)
        return None if i < 0 else schema.field(i).type

    def refuse(what: str) -> CatalogError:
        return CatalogError(f"{source}: a STAC-GeoParquet catalog (it has `assets`): {what}")

    assets = field("assets")
    data = assets.field(ASSET).type if assets.get_field_index(ASSET) >= 0 else None
    href = data.field("href").type if data is not None and _has(data, "href") else None
    if href is None:
        keys = ", ".join(assets.field(i).name for i in range(assets.num_fields)) or "none"
        raise refuse(f"its items have no `{HREF}` (the COG's URL); their assets: {keys}")
    if not _is_string(href):
        raise refuse(f"`{HREF}` has type {href}, expected a string")
    datetimes = tuple(name for name in DATETIMES if field(name) is not None)
    if not datetimes:
        raise refuse("it lacks `datetime` and `start_datetime`, which give each item's year")
    for name in datetimes:
        if not _is_time(field(name)):
            raise refuse(f"`{name}` has type {field(name)}, expected a timestamp")
    bbox = field(BBOX)
    if bbox is None:
        raise refuse("it lacks `bbox`, each item's lon/lat box")
    if not _is_box(bbox):
        raise refuse(f"`bbox` has type {bbox}, expected a struct xmin/ymin/xmax/ymax or a list")
    crs = next((name for name in CRS_FIELDS if field(name) is not None), None)
    if crs == "proj:code" and not _is_string(field(crs)):
        raise refuse(f"`proj:code` has type {field(crs)}, expected a string such as 'EPSG:32633'")
    if crs == "proj:epsg" and not (pa.types.is_integer(field(crs)) or _is_string(field(crs))):
        raise refuse(f"`proj:epsg` has type {field(crs)}, expected an integer such as 32633")
    utm_bbox = field(UTM_BBOX)
    if utm_bbox is not None and not (_is_list(utm_bbox) and _numbers(utm_bbox.value_type)):
        raise refuse(f"`proj:bbox` has type {utm_bbox}, expected a list of numbers")
    geometry = field(GEOMETRY)
    if geometry is not None and not _is_binary(geometry):
        raise refuse(f"`geometry` has type {geometry}, expected WKB")
    return StacLayout(datetimes, crs, utm_bbox is not None, geometry is not None)


def _years(table: pa.Table, datetimes: tuple[str, ...], source: str) -> pa.Array:
    """The UTC year of each item's first non-NULL datetime (NULL where all are NULL, which
    `normalize` refuses as a NULL year)."""
    years = [_utc_year(table[name], name, source) for name in datetimes]
    return pc.coalesce(*years).cast(pa.int32()) if len(years) > 1 else years[0].cast(pa.int32())


def _utc_year(column: pa.ChunkedArray, name: str, source: str) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_date(kind):
        return pc.year(column)
    if _is_string(kind):
        try:  # RFC 3339, as STAC writes datetimes: with a zone offset
            column = column.cast(pa.timestamp("us", tz="UTC"))
        except pa.ArrowInvalid as exc:
            raise CatalogError(f"catalog {source}: `{name}`: {exc}") from None
        kind = column.type
    if kind.tz is not None:  # the instant's year in UTC, not in the zone it was written in
        column = column.cast(pa.timestamp(kind.unit, tz="UTC"))
    return pc.year(column)


def _crs(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """'EPSG:n' from proj:epsg's number (or digits); proj:code's text as it is. A dictionary
    stays one (its values rewritten): it is measured before it is expanded."""
    chunks = [_crs_chunk(chunk) for chunk in column.chunks]
    return pa.chunked_array(chunks) if chunks else pa.chunked_array([], pa.string())


def _crs_chunk(chunk: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(chunk.type):
        return pa.DictionaryArray.from_arrays(chunk.indices, _crs_chunk(chunk.dictionary))
    if pa.types.is_integer(chunk.type):
        return pc.binary_join_element_wise("EPSG:", chunk.cast(pa.string()), "")
    text = chunk.cast(pa.string())
    digits = pc.match_substring_regex(text, r"^\s*\d+\s*$")
    return pc.if_else(
        digits, pc.binary_join_element_wise("EPSG:", pc.utf8_trim_whitespace(text), ""), text
    )


def _box_side(
    column: pa.ChunkedArray, side: int, name: str, source: str, row_offset: int
) -> pa.Array:
    """Side `side` (0 west, 1 south, 2 east, 3 north) of each row's box, float64; NULL
    where the box is NULL (or, for a list, empty)."""
    column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        return pc.struct_field(column, _BBOX_FIELDS[side]).cast(pa.float64())
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    wrong = ~np.isin(lengths, [0, *_CORNERS])
    if wrong.any():
        row = int(np.argmax(wrong))
        raise CatalogError(
            f"catalog {source}, row {row_offset + row + 1}: `{name}` has {lengths[row]} "
            "numbers, expected 4 (west, south, east, north) or 6"
        )
    starts = np.asarray(column.offsets)[:-1]
    values = pc.fill_null(column.values.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    pick = np.zeros(lengths.size, dtype=np.int64)
    for length, corners in _CORNERS.items():
        pick[lengths == length] = corners[side]
    present = lengths > 0
    out = np.full(lengths.size, np.nan)
    out[present] = values[starts[present] + pick[present]]
    return pa.array(out, pa.float64(), mask=~present)


def _has(struct: pa.DataType, name: str) -> bool:
    return pa.types.is_struct(struct) and struct.get_field_index(name) >= 0


def _value(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _is_string(kind: pa.DataType) -> bool:
    kind = _value(kind)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_binary(kind: pa.DataType) -> bool:
    if isinstance(kind, pa.ExtensionType):  # geoarrow.wkb
        kind = kind.storage_type
    kind = _value(kind)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _is_time(kind: pa.DataType) -> bool:
    kind = _value(kind)
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind) or _is_string(kind)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _numbers(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _is_box(kind: pa.DataType) -> bool:
    if _is_list(kind):
        return _numbers(kind.value_type)
    return all(_has(kind, f) and _numbers(kind.field(f).type) for f in _BBOX_FIELDS)
