"""Fixtures written by GDAL (through rasterio) and pyarrow: the independent writer aefsql is
checked against. Nothing here imports aefsql."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import tifffile
from pyproj import Transformer
from rasterio.transform import Affine

PIXEL = 10.0
NODATA = -128
OVERVIEW_FACTORS = [2, 4]
MODEL_TRANSFORMATION_TAG, MODEL_PIXEL_SCALE_TAG, MODEL_TIEPOINT_TAG = 34264, 33550, 33922
GEOREFERENCING_TAGS = (MODEL_TRANSFORMATION_TAG, MODEL_PIXEL_SCALE_TAG, MODEL_TIEPOINT_TAG)


@dataclass(frozen=True)
class Layout:
    compression: str = "zstd"  # zstd | deflate
    predictor: int = 1  # 1 | 2
    bigtiff: bool = False
    south_up: bool = True
    block: int = 256
    interleave: str = "band"  # band: planar-separate (AEF); pixel: chunky
    epsg: int = 32633
    width: int = 700  # not multiples of the block: edge blocks are partial
    height: int = 600
    bands: int = 64
    west: float = 420000.0
    south: float | None = None  # default: a realistic northing for the hemisphere

    @property
    def name(self) -> str:
        planar = "planar" if self.interleave == "band" else "chunky"
        return (
            f"int8_{self.bands}band_{planar}_{self.compression}_pred{self.predictor}"
            f"_block{self.block}_{'southup' if self.south_up else 'northup'}"
            f"_{'bigtiff' if self.bigtiff else 'tiff'}_{self.epsg}.tif"
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the layout's UTM CRS."""
        south = self.south if self.south is not None else default_south(self.epsg)
        return (
            self.west,
            south,
            self.west + self.width * PIXEL,
            south + self.height * PIXEL,
        )

    @property
    def transform(self) -> Affine:
        west, south, _, north = self.bounds
        if self.south_up:
            # Positive Y scale: GDAL can only say this with a ModelTransformationTag, as the
            # published files do.
            return Affine(PIXEL, 0, west, 0, PIXEL, south)
        return Affine(PIXEL, 0, west, 0, -PIXEL, north)


def default_south(epsg: int) -> float:
    return 5100000.0 if epsg < 32700 else 7100000.0  # ~46°N / ~26°S


AEF = Layout()
LAYOUTS = [
    AEF,
    Layout(epsg=32733),  # the AEF layout in a southern zone
    Layout(compression="deflate"),
    Layout(predictor=2),
    Layout(compression="deflate", predictor=2, epsg=32718),
    Layout(bigtiff=True),
    Layout(south_up=False),
    Layout(interleave="pixel", block=128),
    Layout(block=128, width=513, height=257),
]


def layout_data(layout: Layout, seed: int) -> np.ndarray:
    """int8 (bands, rows, cols): random values in [-127, 127], a nodata rectangle and a few
    nodata pixels in all bands (AEF masks all bands together), and a few -128 values in single
    bands (a reader must not mask a whole pixel for one band)."""
    rng = np.random.default_rng(seed)
    shape = (layout.bands, layout.height, layout.width)
    data = rng.integers(-127, 128, shape, dtype=np.int8)
    data[:, 40:90, 100:180] = NODATA
    for _ in range(20):
        data[:, rng.integers(layout.height), rng.integers(layout.width)] = NODATA
    for _ in range(20):
        band, row, col = (rng.integers(n) for n in shape)
        data[band, row, col] = NODATA
    return data


def write_layout(folder: Path, layout: Layout, seed: int = 0, name: str | None = None) -> Path:
    """Write `layout_data(layout, seed)` with GDAL as folder/name (default: the layout's name)."""
    path = Path(folder) / (name or layout.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=layout.width,
        height=layout.height,
        count=layout.bands,
        dtype="int8",
        crs=f"EPSG:{layout.epsg}",
        transform=layout.transform,
        nodata=NODATA,
        tiled=True,
        blockxsize=layout.block,
        blockysize=layout.block,
        compress=layout.compression.upper(),
        predictor=layout.predictor,
        interleave=layout.interleave,
        BIGTIFF="YES" if layout.bigtiff else "NO",
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(layout_data(layout, seed))
        ds.descriptions = tuple(f"A{i:02d}" for i in range(layout.bands))
        ds.build_overviews(OVERVIEW_FACTORS)
    check_georeferencing_tags(path, layout.south_up)
    return path


def check_georeferencing_tags(path: Path, south_up: bool) -> None:
    """South-up files must carry the published files' georeferencing: a ModelTransformationTag
    and no PixelScale/Tiepoint (if GDAL ever changes this, the fixtures stop being AEF-like)."""
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        found = {code for code in GEOREFERENCING_TAGS if code in tags}
    expected = (
        {MODEL_TRANSFORMATION_TAG} if south_up else {MODEL_PIXEL_SCALE_TAG, MODEL_TIEPOINT_TAG}
    )
    if found != expected:
        raise AssertionError(f"{path}: georeferencing tags {sorted(found)}, not {sorted(expected)}")


def raster_bounds(ds) -> tuple[float, float, float, float]:
    """(west, south, east, north) of an open rasterio dataset. rasterio's ds.bounds is
    (c, f + e·height, c + a·width, f): for a south-up file its "bottom" is the northern edge."""
    left, bottom, right, top = ds.bounds
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def to_lonlat(epsg: int, x, y) -> tuple[np.ndarray, np.ndarray]:
    """UTM (or any EPSG) x/y to lon/lat arrays."""
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    return np.asarray(lon), np.asarray(lat)


lonlat = to_lonlat  # the older name, still used by some tests


def random_pixel_points(ds_or_path, n: int, seed: int = 0, include_edges: bool = True):
    """(x, y, rows, cols, inside): UTM x/y of points inside pixels (5%..95% across, never near
    a pixel boundary), the pixel's row/col in the file's own row order, and whether it is
    inside the raster. n random pixels; with include_edges also n//4 each of rows and columns
    on the first/last row/column and either side of block edges. Always exactly 4 points
    outside the raster, one past each side."""
    if isinstance(ds_or_path, (str, Path)):
        with rasterio.open(ds_or_path) as ds:
            return random_pixel_points(ds, n, seed, include_edges)
    ds = ds_or_path
    width, height, transform = ds.width, ds.height, ds.transform
    block_rows, block_cols = ds.block_shapes[0]
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, height, n)]
    cols = [rng.integers(0, width, n)]
    if include_edges:
        rows += [rng.choice(edges(height, block_rows), n // 4), rng.integers(0, height, n // 4)]
        cols += [rng.integers(0, width, n // 4), rng.choice(edges(width, block_cols), n // 4)]
    rows.append([-1, height, 3, 3])
    cols.append([3, 3, -1, width])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    fx = rng.uniform(0.05, 0.95, rows.size)
    fy = rng.uniform(0.05, 0.95, rows.size)
    x = transform.c + transform.a * (cols + fx)
    y = transform.f + transform.e * (rows + fy)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return x, y, rows, cols, inside


def edges(size: int, block: int) -> np.ndarray:
    """The first and last index, and the indices either side of every block boundary."""
    inner = np.arange(block, size, block)
    return np.unique(np.r_[0, size - 1, inner - 1, inner])


# -- a multi-tile, two-year collection with its index.parquet ------------------------------

# (zone label, EPSG, x of the western edge, y of the southern edge). 32N and 33N meet at 12°E:
# tiles 0 and 1 both straddle it, so they overlap in lon/lat. Tiles 1 and 2 touch corner to
# corner; GAP_LONLAT, 5 pixels west of tile 2, is inside tile 2's lon/lat box (a UTM rectangle
# is a rotated shape in lon/lat) but in no raster. 18S is in the southern hemisphere; nothing
# covers (0, 0).
COLLECTION_TILES = [
    ("32N", 32632, 735000.0, 4986000.0),
    ("33N", 32633, 262000.0, 4986000.0),
    ("33N", 32633, 265000.0, 4988600.0),
    ("18S", 32718, 498000.0, 8506000.0),
]
TILE_WIDTH, TILE_HEIGHT, TILE_BLOCK = 300, 260, 128
GAP_UTM = (32633, 264950.0, 4988750.0)
GAP_LONLAT = tuple(float(v) for v in to_lonlat(*GAP_UTM))


def collection_path(year: int, k: int) -> str:
    """Tile k's path relative to the index, in the published naming scheme."""
    zone = COLLECTION_TILES[k][0]
    return f"{year}/{zone}/tile{k}-{0:010d}-{0:010d}.tiff"


def collection_layout(k: int) -> Layout:
    _, epsg, west, south = COLLECTION_TILES[k]
    return Layout(
        epsg=epsg, width=TILE_WIDTH, height=TILE_HEIGHT, block=TILE_BLOCK, west=west, south=south
    )


def write_collection(folder: Path, years=(2023, 2024)) -> Path:
    """The AEF layout (planar, zstd, pred 1, south-up, int8 x 64) in several UTM zones and
    years, and an index.parquet in the published narrow schema with relative paths.
    Returns the index's path."""
    folder = Path(folder)
    rows = []
    for year in years:
        for k in range(len(COLLECTION_TILES)):
            layout = collection_layout(k)
            path = collection_path(year, k)
            write_layout(folder, layout, seed=year * 10 + k, name=path)
            rows.append(index_row(len(rows) + 1, year, path, layout))
    return write_index(folder / "index.parquet", rows)


INDEX_SCHEMA = pa.schema(
    [
        ("fid", pa.int64()),
        ("geom", pa.binary()),
        ("year", pa.int32()),
        ("path", pa.string()),
        ("crs", pa.string()),
        ("utm_zone", pa.string()),
    ]
    + [
        (f"{prefix}_{side}", pa.float64())
        for prefix in ("utm", "wgs84")
        for side in ("west", "south", "east", "north")
    ]
)


def index_row(fid: int, year: int, path: str, layout: Layout) -> dict:
    west, south, east, north = layout.bounds
    lon, lat = footprint_lonlat(layout.epsg, layout.bounds)
    hemisphere = "N" if layout.epsg < 32700 else "S"
    return {
        "fid": fid,
        "geom": polygon_wkb(lon, lat),
        "year": year,
        "path": path,
        "crs": f"EPSG:{layout.epsg}",
        "utm_zone": f"{layout.epsg % 100}{hemisphere}",
        "utm_west": west,
        "utm_south": south,
        "utm_east": east,
        "utm_north": north,
        "wgs84_west": float(lon.min()),
        "wgs84_south": float(lat.min()),
        "wgs84_east": float(lon.max()),
        "wgs84_north": float(lat.max()),
    }


def footprint_lonlat(epsg: int, bounds, per_side: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The UTM rectangle's outline in lon/lat, a closed counter-clockwise ring densified
    because a UTM rectangle's edges are curves in lon/lat."""
    west, south, east, north = bounds
    corners = np.array([(west, south), (east, south), (east, north), (west, north), (west, south)])
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)[:, None]
    sides = [a + t * (b - a) for a, b in zip(corners[:-1], corners[1:], strict=True)]
    x, y = np.vstack([*sides, corners[:1]]).T
    return to_lonlat(epsg, x, y)


def polygon_wkb(lon: np.ndarray, lat: np.ndarray) -> bytes:
    """A one-ring polygon as little-endian ISO WKB."""
    header = struct.pack("<BIII", 1, 3, 1, len(lon))  # byte order, Polygon, 1 ring, points
    return header + b"".join(struct.pack("<dd", a, b) for a, b in zip(lon, lat, strict=True))


def write_index(path: Path, rows: list[dict]) -> Path:
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    bbox = [
        min(r["wgs84_west"] for r in rows),
        min(r["wgs84_south"] for r in rows),
        max(r["wgs84_east"] for r in rows),
        max(r["wgs84_north"] for r in rows),
    ]
    # No "crs" key: GeoParquet then means OGC:CRS84 (lon/lat); an explicit null would mean
    # "unknown".
    geo = {
        "version": "1.0.0",
        "primary_column": "geom",
        "columns": {"geom": {"encoding": "WKB", "geometry_types": ["Polygon"], "bbox": bbox}},
    }
    table = table.replace_schema_metadata({"geo": json.dumps(geo)})
    pq.write_table(table, path)
    return Path(path)


# -- the same collection's STAC-GeoParquet index --------------------------------------------


def write_stac_index(
    path: Path, folder: Path, years=(2023, 2024), proj: str = "code", utm_bbox: bool = True
) -> Path:
    """The collection in `folder` (write_collection) as the published
    aef_index_stac_geoparquet.parquet is built: one STAC item per file and year, read from
    the file with rasterio (its CRS, bounds and shape in the projection extension), its COG
    in the `data` asset (an absolute path, as the published hrefs are URLs), its year as
    `datetime` 1 January UTC with start/end_datetime the whole year, its footprint and bbox
    the densified outline in lon/lat; written with stac-geoparquet. `proj`: 'code'
    (projection extension v2, `proj:code`) or 'epsg' (v1, `proj:epsg`); `utm_bbox`: whether
    items carry `proj:bbox`. Rows in write_collection's order."""
    import datetime

    import pystac
    from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

    items = []
    for year in years:
        for k in range(len(COLLECTION_TILES)):
            tiff = Path(folder) / collection_path(year, k)
            with rasterio.open(tiff) as ds:
                epsg, bounds, shape = ds.crs.to_epsg(), raster_bounds(ds), [ds.height, ds.width]
            lon, lat = footprint_lonlat(epsg, bounds)
            start = datetime.datetime(year, 1, 1, tzinfo=datetime.UTC)
            properties = {
                "start_datetime": start.isoformat(),
                "end_datetime": datetime.datetime(
                    year, 12, 31, 23, 59, 59, tzinfo=datetime.UTC
                ).isoformat(),
                "proj:shape": shape,
            }
            if proj == "code":
                properties["proj:code"] = f"EPSG:{epsg}"
            else:
                properties["proj:epsg"] = epsg
            if utm_bbox:
                properties["proj:bbox"] = list(bounds)
            item = pystac.Item(
                id=f"{year}/{tiff.stem}",
                geometry={"type": "Polygon", "coordinates": [list(zip(lon, lat, strict=True))]},
                bbox=[float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())],
                datetime=start,
                properties=properties,
                stac_extensions=[
                    "https://stac-extensions.github.io/projection/"
                    + ("v2.0.0" if proj == "code" else "v1.1.0")
                    + "/schema.json"
                ],
            )
            item.add_asset(
                "data",
                pystac.Asset(href=str(tiff), media_type=pystac.MediaType.COG, roles=["data"]),
            )
            items.append(item.to_dict())
    table = parse_stac_items_to_arrow(items)
    to_parquet(table, path)
    return Path(path)
