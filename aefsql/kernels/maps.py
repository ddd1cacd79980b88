"""Maps of an area as Cloud-Optimized GeoTIFFs that QGIS and rasterio place on the map: a
similarity map, a change map, a PCA picture or embedding bands.

A map is drawn on `read_area`'s grid (aefsql/kernels/rasters.py: the tiles' own 10 m grid in
one UTM zone, north-up; across zones the zone whose tiles own most of the area, or
`target_crs`), from its int8 values, by the kernels that compute the same numbers elsewhere:
the cosine of `aef_similarity` (`similarity.pixel_similarity`), of `aef_change`
(`change.compare`), `picture`'s PCA colours (`pictures.pca_pictures`). It is written by
aefsql's own COG writer (`writer.write_map_cog`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..aef import BAND_COUNT, NODATA, dequantize
from ..errors import AefsqlError, user_stacklevel
from ..geometry import geo
from ..options import Mention, OptionError, speaks, year_list
from ..session import Session, open_session
from ..storage.store import DEFAULT_CONCURRENCY
from ..writer import COMPRESSION_CODES, write_map_cog
from .budgets import RASTER_BYTES
from .change import compare
from .pictures import check_pca_bands, check_writable, pca_pictures, reference_embedding
from .pixels import Pixels
from .rasters import AreaGrid, plan_area, read_planned
from .similarity import pixel_similarity, query_vector

# What a map shows: the `kind` of write_map, `--kind` of `aefsql map`.
KINDS = ("similarity", "change", "pca", "bands")
COSINE_PIXELS = 1 << 20  # pixels handed to the cosine kernel at once (their int8: 64 MiB)


@dataclass(frozen=True, repr=False)
class Map:
    """What `write_map` wrote: `values` (bands, height, width) north to south on `grid`, as
    the file holds them (float32 with NaN, int8 with -128, or RGBA uint8), and the bands'
    names (GDAL's band descriptions)."""

    path: str
    kind: str
    grid: AreaGrid
    years: tuple[int, ...]
    values: np.ndarray
    band_names: tuple[str, ...]

    def __repr__(self) -> str:
        bands, height, width = self.values.shape
        return (
            f"<Map {self.kind} of {'-'.join(map(str, self.years))}: {width} x {height} "
            f"pixels x {bands} bands of {abs(self.grid.transform.a):g} m, "
            f"EPSG:{self.grid.epsg}, {self.path}>"
        )


@speaks("python")
def write_map(
    area,
    year,
    path,
    *,
    kind: str,
    reference=None,
    negatives=None,
    bands=None,
    crs=4326,
    target_crs=None,
    max_bytes: int = RASTER_BYTES,
    level: int = 0,
    compression: str = "deflate",
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Map:
    """Write a map of `area` in `year` to `path` (a local .tif) as a Cloud-Optimized GeoTIFF
    (tiled, compressed, with overviews, north-up) and return the `Map`.

    `kind`: 'similarity' — float32, each pixel's cosine with the query of `reference` and
    `negatives` as `aefsql.similarity` computes it (NaN: nodata); 'change' — float32, the
    cosine of each pixel's embeddings in two years (`year` a list, e.g. [2023, 2024]; more
    years give a band per consecutive pair), as `aefsql.change` (NaN where either is nodata);
    'pca' — RGB and alpha, uint8, `picture`'s three principal components (transparent:
    nodata); 'bands' — the int8 values of `bands` (default all 64), nodata -128.
    `reference` and `negatives` (similarity only): a place (lon, lat) — its embedding in
    `year` — or an embedding (64 de-quantized numbers, as `aefsql.similarity` takes), or a
    list of either; the query is 2·mean(reference) − mean(negatives).
    `area`, `crs`, `target_crs`, `level` and `max_bytes` as for `read_area`, whose grid the
    map is on: inside one UTM zone the tiles' own grid; an area across zones is drawn in
    `target_crs`, default the zone whose tiles own most of it (with a warning naming the
    zones). `compression`: 'deflate' (default: every GDAL reads it) or 'zstd'. `catalog`,
    `cache_dir`, `headers`, `concurrency`, `allowed_hosts` and `storage_options`: as for
    `aefsql.connect`.
    """
    if kind not in KINDS:
        raise AefsqlError(f"kind {kind!r} is not a map: one of {', '.join(map(repr, KINDS))}")
    if compression not in COMPRESSION_CODES:
        raise AefsqlError(
            f"compression {compression!r}: one of {', '.join(map(repr, COMPRESSION_CODES))}"
        )
    if kind == "pca":
        check_pca_bands(bands)
    years = year_list(year)
    if kind == "change" and len(years) < 2:
        raise AefsqlError("a change map compares years: pass two or more, e.g. [2023, 2024]")
    if kind != "change" and len(years) != 1:
        raise AefsqlError(f"a {kind} map is of one year, not {len(years)}")
    if (kind == "similarity") != (reference is not None):
        raise (
            OptionError(
                "a similarity map needs {}: a place (lon, lat) or an embedding",
                Mention("reference"),
            )
            if kind == "similarity"
            else OptionError(
                f"{{}} is for a similarity map, not a {kind} map", Mention("reference")
            )
        )
    if negatives is not None and kind != "similarity":
        raise OptionError(f"{{}} is for a similarity map, not a {kind} map", Mention("negatives"))
    if bands is not None and kind in ("similarity", "change"):
        raise AefsqlError(f"a {kind} map compares all 64 bands: pass no bands")
    request = plan_area(
        area, years, bands=bands, crs=crs, target_crs=target_crs, max_bytes=max_bytes, level=level
    )
    check_writable(path)  # before anything is read
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers,
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    query = None
    if kind == "similarity":
        query = query_vector(
            _embeddings(session, reference, years[0]),
            None if negatives is None else _embeddings(session, negatives, years[0]),
        )
    raster = read_planned(session, request)
    grid = raster.grid
    if grid.width == 0 or grid.height == 0:
        raise AefsqlError("the area holds no pixel centre: there is nothing to map")
    if target_crs is None:
        _say_zone(raster.zones, grid.epsg)
    alpha, nodata = False, np.float32(np.nan)
    if kind == "similarity":
        values = _similarity(raster.values[0], query)[None]
        names = ["similarity"]
    elif kind == "change":
        flat = [v.reshape(BAND_COUNT, -1) for v in raster.values]
        pairs = compare(flat, [None] * len(flat))
        values = np.ascontiguousarray(pairs.T).reshape(-1, grid.height, grid.width)
        names = [f"similarity {a}-{b}" for a, b in zip(years, years[1:], strict=False)]
    elif kind == "pca":
        (rgba,), _ = pca_pictures([raster.values[0]], None, request.bands)
        values, names = np.ascontiguousarray(np.moveaxis(rgba, -1, 0)), None
        alpha, nodata = True, None
    else:
        values, names, nodata = raster.values[0], list(request.bands), NODATA
    t = grid.transform
    write_map_cog(
        path,
        values,
        epsg=grid.epsg,
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        nodata=nodata,
        alpha=alpha,
        band_names=names,
        compression=compression,
    )
    return Map(
        str(path), kind, grid, years, values, tuple(names or ("red", "green", "blue", "alpha"))
    )


def _embeddings(session: Session, given, year: int) -> list:
    """`given` as de-quantized embeddings: a place (lon, lat) becomes its embedding in
    `year`; an embedding (64 numbers) stays; a list of either, each."""
    items = list(given) if _is_list(given) else [given]
    if items and not any(_is_list(v) for v in items):
        items = [items]  # one place or one embedding, as numbers
    out = []
    for item in items:
        if _is_list(item) and len(item) == 2:
            out.append(dequantize(reference_embedding(session, item, year)))
        else:
            out.append(item)  # query_vector checks it is 64 numbers
    return out


def _is_list(value) -> bool:
    return not isinstance(value, str | bytes) and hasattr(value, "__len__")


def _similarity(values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """float32 (height, width): each pixel's cosine with `query`, by aef_similarity's kernel
    (NaN: any band -128, i.e. nodata, outside the area or outside coverage)."""
    _, height, width = values.shape
    flat = values.reshape(BAND_COUNT, -1)
    out = np.empty(flat.shape[1], np.float32)
    for start in range(0, flat.shape[1], COSINE_PIXELS):
        part = np.ascontiguousarray(flat[:, start : start + COSINE_PIXELS])
        n = part.shape[1]
        none = np.zeros(n, np.int64)
        pixels = Pixels(
            chunk=none,
            row=none,
            col=none,
            x=none,
            y=none,
            lon=None,
            lat=None,
            location=none,
            values=part,
            nodata=np.full(n, NODATA, np.int16),
            band_count=np.full(n, BAND_COUNT, np.int16),
            bands=list(range(BAND_COUNT)),
        )
        out[start : start + n] = pixel_similarity(pixels, query)
    return out.reshape(height, width)


def _say_zone(zones: tuple[int, ...], epsg: int) -> None:
    """Warn when tiles of several UTM zones own the area (`AreaRaster.zones`): the map is in
    one of them."""
    if len(zones) > 1:
        names = ", ".join(geo.utm_label(code) or f"EPSG:{code}" for code in sorted(zones))
        warnings.warn(
            f"the area spans UTM zones {names}: the map is in EPSG:{epsg}, the "
            "zone whose tiles own most of it (pixels of other zones' tiles are their nearest "
            "source pixel); pass target_crs (aefsql map: --target-crs) to choose",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
