"""The aef_* UDFs' result types, written once, as Arrow: DuckDB derives their SQL types
(`sql_type`), so the two cannot disagree."""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from ..aef import BAND_NAMES
from ..kernels.coverage import STATUSES

if TYPE_CHECKING:
    from duckdb.sqltypes import DuckDBPyType

EMBEDDING_ARROW = pa.struct([(name, pa.int8()) for name in BAND_NAMES])
# sampled_values' result: the bands of one (row, year) of aef_sample_points, its error and
# its status (coverage.STATUSES).
SAMPLE_VALUES_ARROW = pa.struct(
    [*EMBEDDING_ARROW, ("aef_error", pa.string()), ("status", pa.string())]
)
# locate_pixel's result: the tile of a point and the point's pixel there.
LOCATED_ARROW = pa.struct(
    [("path", pa.string()), ("pixel_row", pa.int32()), ("pixel_col", pa.int32())]
)
PLAN_ARROW = pa.struct([(f, pa.int64()) for f in ("points", "blocks", "requests", "bytes")])
OPTIONS_ARROW = pa.struct(
    [
        ("error", pa.string()),
        ("years", pa.list_(pa.int32())),
        ("crs", pa.int32()),
        ("bands", pa.list_(pa.string())),
    ]
)
POINT_XY_ARROW = pa.struct([("x", pa.float64()), ("y", pa.float64())])

CHUNK_ARROW = pa.struct(
    [
        ("path", pa.string()),
        ("year", pa.int32()),
        ("row", pa.int32()),
        ("col0", pa.int32()),
        ("col1", pa.int32()),
        ("centroid", pa.bool_()),
    ]
)
UNIT_ARROW = pa.struct(
    [
        ("year", pa.int32()),
        ("tiles", pa.list_(pa.int64())),
        ("stand_in", pa.bool_()),
        ("wkb", pa.binary()),
        ("box", pa.list_(pa.float64())),
        ("crs", pa.int32()),
        ("level", pa.int32()),
    ]
)
# Where a pixel of aef_pixels is: the fields before its bands (or its vector).
PIXEL_PLACE_ARROW = [
    ("location", pa.int64()),
    ("row", pa.int32()),
    ("col", pa.int32()),
    *((name, pa.float64()) for name in ("x", "y")),
    # of x/y: "EPSG:32633", as aef_chips' chip_crs (aef_pixels calls it crs, a name its
    # parameters take)
    ("xy_crs", pa.string()),
]
# pixel_lonlat's result: lon/lat of a pixel centre, asked for apart from the pixels (PROJ costs
# more than reading them) so that DuckDB leaves it out of queries that never read lon or lat.
LONLAT_ARROW = pa.struct([(name, pa.float64()) for name in ("lon", "lat")])


class LonLatWkb(pa.ExtensionType):
    """WKB in lon/lat, as GeoArrow names it (`geoarrow.wkb`, CRS OGC:CRS84): DuckDB reads it
    as GEOMETRY('OGC:CRS84'), GeoPandas as a GeoSeries in EPSG:4326. (Not registered with
    pyarrow: geoarrow-pyarrow, where installed, registers the name itself.)"""

    def __init__(self):
        super().__init__(pa.binary(), "geoarrow.wkb")

    def __arrow_ext_serialize__(self) -> bytes:
        return b'{"crs": "OGC:CRS84"}'

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized) -> LonLatWkb:
        return cls()


# The `geom` column of geometry := 'point' | 'pixel'.
GEOMETRY_ARROW = LonLatWkb()
PIXEL_ARROW = pa.struct([*PIXEL_PLACE_ARROW, *EMBEDDING_ARROW])
# aef_pixels(as_vector := true): the de-quantized bands as one FLOAT[64] (NULL on nodata).
PIXEL_VECTOR_ARROW = pa.struct(
    [*PIXEL_PLACE_ARROW, ("embedding", pa.list_(pa.float32(), len(BAND_NAMES)))]
)
# aef_similarity: where a pixel is and its cosine with the query (FLOAT: computed in float32);
# no row/col, which it does not give (fewer columns for DuckDB to unnest).
PIXEL_SIMILARITY_ARROW = pa.struct(
    [
        *(f for f in PIXEL_PLACE_ARROW if f[0] not in ("row", "col")),
        ("similarity", pa.float32()),
    ]
)
# similarity_query's result: the error to raise, or the unit query vector.
QUERY_ARROW = pa.struct(
    [("error", pa.string()), ("query", pa.list_(pa.float32(), len(BAND_NAMES)))]
)

# aef_change's plan and rows: a unit (one tile position, or the centroid's stand-in) with its
# area; a chunk with its file in each year (NULL: none that year); a row per pixel and pair.
CHANGE_UNIT_ARROW = pa.struct(
    [
        ("position", pa.int32()),
        ("stand_in", pa.bool_()),
        ("wkb", pa.binary()),
        ("box", pa.list_(pa.float64())),
        ("crs", pa.int32()),
        ("years", pa.list_(pa.int32())),
        ("level", pa.int32()),
    ]
)
CHANGE_CHUNK_ARROW = pa.struct(
    [
        ("paths", pa.list_(pa.string())),
        ("row", pa.int32()),
        ("col0", pa.int32()),
        ("col1", pa.int32()),
        ("centroid", pa.bool_()),
    ]
)
CHANGE_ARROW = pa.struct(
    [
        ("location", pa.int64()),
        *((name, pa.float64()) for name in ("x", "y")),
        ("xy_crs", pa.string()),
        ("year_from", pa.int32()),
        ("year_to", pa.int32()),
        ("similarity", pa.float32()),
    ]
)

AREA_PLAN_ARROW = pa.struct(
    [
        ("plan_year", pa.int32()),
        *((name, pa.int64()) for name in ("tiles", "blocks", "pixels", "value_bytes")),
        ("note", pa.string()),
    ]
)

ZONAL_ARROW = pa.struct(
    [
        ("row", pa.int64()),
        ("year", pa.int32()),
        ("pixels", pa.int64()),
        ("nodata_pixels", pa.int64()),
        ("centroid_pixel", pa.bool_()),
        ("embedding", pa.list_(pa.float32(), len(BAND_NAMES))),
        ("aef_error", pa.string()),
    ]
)

# aef_grid: a cell's mean embedding in a year.
GRID_ARROW = pa.struct(
    [
        ("cell", pa.string()),
        ("year", pa.int32()),
        ("pixels", pa.int64()),
        ("nodata_pixels", pa.int64()),
        ("embedding", pa.list_(pa.float32(), len(BAND_NAMES))),
    ]
)

CHIP_ARROW = pa.struct(
    [
        ("chip", pa.list_(pa.list_(pa.list_(pa.int8())))),
        ("chip_crs", pa.string()),
        ("chip_bounds", pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])),
        ("valid_pixels", pa.int64()),
        ("embedding", pa.list_(pa.float32(), len(BAND_NAMES))),
        ("aef_error", pa.string()),
    ]
)
CHIP_PLAN_ARROW = pa.struct(
    [("error", pa.string()), ("per_call", pa.int32()), ("period", pa.int32())]
)


def sql_type(con: duckdb.DuckDBPyConnection, arrow_type: pa.DataType) -> DuckDBPyType:
    """The SQL type DuckDB gives Arrow values of `arrow_type` (that of an empty column of
    it): what a UDF declared with it must return, exactly."""
    return con.from_arrow(pa.table({"value": pa.array([], arrow_type)})).types[0]


def status_words(codes) -> pa.StringArray:
    """The `status` column from coverage's int8 codes (indices into STATUSES): a take, no
    Python string per row."""
    return pa.array(STATUSES, pa.string()).take(pa.array(codes))
