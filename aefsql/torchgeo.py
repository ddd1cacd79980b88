"""AEF as a TorchGeo GeoDataset: the catalog is the spatiotemporal index, no COG is opened
until a sample is read.

    dataset = AEF(catalog=..., years=[2023, 2024], crs=32633)
    sampler = GridGeoSampler(dataset, size=64, stride=64)
    loader = DataLoader(dataset, sampler=sampler, collate_fn=stack_samples)

A query (TorchGeo's x, y and time slices) is read as a north-up window of `res` pixels in
the dataset's CRS, by the rule of `aef_chips` (aefsql/kernels/chips.py,
aefsql/kernels/mosaic.py): the pixels tiles on that grid own are read block by block, every
other pixel takes the source pixel under its centre in the tile `aef_locate` gives it
(nearest neighbour, never interpolated) — the same pixels `read_area`, `aef_chips` and
`aef_pixels` give. Tested with TorchGeo 0.8.1 (Python 3.11) and 0.10.1 (Python 3.12):
samples follow each version's own RasterDataset — 0.10 gives `bounds` and `transform` as
tensors, 0.8 gives `crs` and the query as `bounds`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely
import torch
from torchgeo.datasets import GeoDataset

from .aef import BAND_NAMES, NODATA, PIXEL_METRES, dequantize
from .errors import AefsqlError
from .kernels.chips import read_windows
from .options import band_list, epsg, headers_option, speaks, year_list
from .session import Session, open_session
from .storage.store import DEFAULT_CONCURRENCY


class AEF(GeoDataset):
    """AlphaEarth Foundations embeddings of `years` (default: every year of the catalog).

    `crs`: the dataset's CRS (default: the chosen tiles' CRS; required when they lie in
    several UTM zones, refused otherwise), `res`: its pixel
    size in that CRS's units (default 10, AEF's own: windows on the tiles' grid are exact
    copies). `bands`: names such as ['A00', 'A05'] (default all 64). Images are int8 with -128
    for nodata, or float32 de-quantized with NaN for nodata when `dequantize`. A query that
    spans several years mosaics them, earliest first (as RasterDataset does with its files);
    `time_series=True` stacks them instead, [T, C, H, W]. `catalog`, `cache_dir`,
    `headers`, `concurrency`, `allowed_hosts`, `storage_options` and `collection` (deprecated
    alias of `headers`): as for `aefsql.connect`.
    """

    @speaks("python")
    def __init__(
        self,
        catalog: str | None = None,
        *,
        years=None,
        bands=None,
        crs=None,
        res: float | None = None,
        dequantize: bool = False,
        time_series: bool = False,
        transforms=None,
        cache_dir: str | None = None,
        headers: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        allowed_hosts: list[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        collection: str | None = None,
    ):
        self.catalog = catalog
        self.options = dict(  # the session's, opened in each worker process
            cache_dir=cache_dir,
            headers=headers_option(headers, collection),
            concurrency=concurrency,
            allowed_hosts=allowed_hosts,
            storage_options=storage_options,
        )
        self.bands = tuple(BAND_NAMES.index(b) for b in band_list(bands))
        self.dequantize, self.time_series, self.transforms = dequantize, time_series, transforms
        self._session: Session | None = None
        self._pid: int | None = None
        table = pq.read_table(self.session().catalog.index_file()).to_pandas()
        if years is not None:
            table = table[table["year"].isin(year_list(years))]
        if table.empty:
            raise AefsqlError(f"the catalog has no tile of year(s) {years}")
        codes = [_tile_epsg(label) for label in table["crs"]]
        self.epsg = epsg(crs) if crs is not None else _default_epsg(codes)
        self.index = _index(table, codes, self.epsg)
        pixel = PIXEL_METRES if res is None else float(res)
        self._res = (pixel, pixel)

    def session(self) -> Session:
        """This process's session: a DataLoader worker (forked or spawned) opens its own."""
        if self._session is None or self._pid != os.getpid():
            self._session = open_session(self.catalog, **self.options)
            self._pid = os.getpid()
        return self._session

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"], state["_pid"] = None, None  # threads do not cross processes
        return state

    def __getitem__(self, query) -> dict:
        x, y, t = self._disambiguate_slice(query)
        hits = self.index.iloc[self.index.index.overlaps(pd.Interval(t.start, t.stop, "both"))]
        # Bounding boxes, not footprints (GeoDataFrame.cx): TorchGeo's samplers cut windows
        # from each row's bounds, and a window there past a reprojected (rotated) footprint
        # must read (-128 where no tile is), not fail the epoch with an IndexError.
        west, south, east, north = shapely.bounds(hits.geometry.to_numpy()).T
        hits = hits[(west <= x.stop) & (east >= x.start) & (south <= y.stop) & (north >= y.start)]
        if hits.empty:
            raise IndexError(f"query: {query} not found in index with bounds: {self.bounds}")
        x_res = x.step or self.res[0]
        y_res = y.step or self.res[1]
        width = round((x.stop - x.start) / x_res)
        height = round((y.stop - y.start) / y_res)
        transform = [x_res, 0.0, x.start, 0.0, -y_res, y.stop]
        session = self.session()
        layers = [
            read_windows(
                session,
                [self.epsg],
                [transform],
                int(year),
                (height, width),
                self.bands,
            ).values[0]
            for year in sorted(set(hits["year"].tolist()))
        ]
        if self.time_series:
            values = np.stack(layers)
        else:
            values = layers[0].copy()
            # The first year holding data wins, value by value (as rasterio.merge does for
            # TorchGeo's RasterDataset).
            for later in layers[1:]:
                empty = values == NODATA
                values[empty] = later[empty]
        image = dequantize(values).astype(np.float32) if self.dequantize else values
        sample = self._sample(query, torch.from_numpy(np.ascontiguousarray(image)), transform)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _sample(self, query, image: torch.Tensor, transform) -> dict:
        if hasattr(self, "_slice_to_tensor"):  # TorchGeo >= 0.9: every value a tensor
            a, b, c, d, e, f = transform
            return {
                "image": image,
                "bounds": self._slice_to_tensor(query),
                "transform": torch.tensor([a, b, c, d, e, f, 0.0, 0.0, 1.0]),
            }
        return {"image": image, "crs": self.crs, "bounds": query}


def _default_epsg(codes: list[int]) -> int:
    """The CRS of the chosen tiles when they share one; refused when they span several: the
    dataset has one CRS, and a tile far from it reprojected there is distorted and its
    bounding box mostly empty, so a sampler would draw windows that are all nodata."""
    counts = Counter(codes).most_common()
    if len(counts) == 1:
        return counts[0][0]
    listed = ", ".join(f"EPSG:{code} ({n} tiles)" for code, n in counts[:5])
    more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    raise AefsqlError(
        f"the chosen tiles lie in {len(counts)} CRSs ({listed}{more}) and a TorchGeo dataset "
        f"has one: pass crs= (e.g. crs={counts[0][0]}). Every chosen tile is then read in "
        "that CRS, other zones' tiles reprojected: right for a zone and its neighbours across "
        "a seam; distant zones give mostly-nodata windows, so sample a region in several "
        "zones with one dataset per zone, over a catalog (or years) of that zone's tiles"
    )


def _tile_epsg(label) -> int:
    """A tile's EPSG code from the catalog's crs column ('EPSG:32633')."""
    try:
        return epsg(label)
    except AefsqlError:
        raise AefsqlError(f"a catalog row names crs {label!r}, not an EPSG code") from None


def _index(table: pd.DataFrame, codes: list[int], target: int) -> gpd.GeoDataFrame:
    """TorchGeo's index: one row a tile, its footprint in EPSG `target` — the UTM box for
    tiles in that CRS, else the catalog's lon/lat footprint reprojected — and the year as a
    closed interval of datetimes."""
    codes_ = np.asarray(codes)
    footprints = gpd.GeoSeries.from_wkb(table["geom"].tolist(), crs=4326).to_crs(target)
    boxes = shapely.box(
        table["utm_west"].to_numpy(),
        table["utm_south"].to_numpy(),
        table["utm_east"].to_numpy(),
        table["utm_north"].to_numpy(),
    )
    own = (codes_ == target) & table[
        ["utm_west", "utm_south", "utm_east", "utm_north"]
    ].notna().all(axis=1).to_numpy()
    geometry = np.where(own, boxes, footprints.to_numpy())
    years = table["year"].to_numpy()
    intervals = pd.IntervalIndex.from_arrays(
        pd.to_datetime([f"{y}-01-01" for y in years]),
        pd.to_datetime([f"{y}-12-31 23:59:59.999999" for y in years]),
        closed="both",
        name="datetime",
    )
    return gpd.GeoDataFrame(
        {"filepath": table["path"].to_numpy(), "year": years},
        index=intervals,
        geometry=list(geometry),
        crs=target,
    )
