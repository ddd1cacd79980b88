"""Chips for PyTorch: a map-style dataset of the chips `aef_chips` cuts, one per point and
year, and a batch sampler that keeps neighbouring chips together.

    dataset = ChipDataset(points, size=64, years=2024, catalog=...)
    loader = DataLoader(dataset, batch_sampler=dataset.tile_batches(32), num_workers=2)

A batch is read in one pass (`__getitems__`): its chips share block reads, and the batches
of `tile_batches` hold chips of one tile in block order. Each worker process opens its own
session on first use; the dataset carries only the points, the parameters and the chips'
tiles across a fork or a pickle (spawn).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset, Sampler

from .aef import BAND_NAMES, NODATA, dequantize
from .errors import AefsqlError
from .geometry import geo
from .headers.reader import point_pixels
from .kernels.budgets import check_windows
from .kernels.chips import read_chips
from .kernels.coverage import warn_missing_years
from .kernels.grouping import group_indices
from .kernels.locate import locate
from .options import arrow_points, headers_option, resolve, speaks
from .session import Session, open_session
from .storage.memory import BlockCache
from .storage.store import DEFAULT_CONCURRENCY

BLOCK_CACHE_BYTES = 512 * 1024**2  # decoded blocks a process keeps
SAMPLE_KEYS = ("image", "mask", "bounds", "crs", "transform", "year", "found")


class ChipDataset(Dataset):
    """Every row of `points` once per distinct year, as a chip of `size` x `size` pixels
    centred on its point (the grid rule of `aef_chips`).

    Item i is row i // len(years) in year years[i % len(years)]: a dict with `image` (a
    tensor [C, H, W], north-up: int8 with -128 for nodata, or float32 de-quantized with NaN
    for nodata when `dequantize`), `mask` (bool [H, W], True where every band holds data),
    `bounds` (float64 [4]: xmin, ymin, xmax, ymax in the chip's CRS), `crs` ('EPSG:32633'),
    `transform` (float64 [6], GDAL order), `year`, `found` (False where the point lies in no
    tile: an all-nodata image, NaN bounds, crs '') and the row's own columns.

    `points`: a pyarrow Table, or a pandas, polars or GeoPandas DataFrame, with `x_column`/
    `y_column` or a point `geometry_column` in `crs` (default lon/lat). `bands`: names such as
    ['A00', 'A05'] (default all 64), in A00..A63 order whatever order they are named in.
    `catalog`, `cache_dir`, `headers`, `concurrency`, `allowed_hosts`, `storage_options` and
    `collection` (deprecated alias of `headers`): as for `aefsql.connect`. The
    size is checked against the window budget when the dataset is made (one chip) and per
    batch when it is read.
    """

    @speaks("python")
    def __init__(
        self,
        points,
        *,
        size: int = 64,
        years=None,
        x_column: str = "lon",
        y_column: str = "lat",
        geometry_column: str | None = None,
        crs=None,
        bands=None,
        level: int = 0,
        dequantize: bool = False,
        catalog: str | None = None,
        cache_dir: str | None = None,
        headers: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        allowed_hosts: list[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        collection: str | None = None,
    ):
        source, _, geometry_column, crs = arrow_points(points, geometry_column, crs)
        table = source.read_all() if isinstance(source, pa.RecordBatchReader) else source
        chosen = resolve(years=years, crs=crs, bands=bands)
        names = table.schema.names
        wanted = [geometry_column] if geometry_column is not None else [x_column, y_column]
        absent = [c for c in wanted if c not in names]
        if absent:
            raise AefsqlError(
                f"ChipDataset: the points table has no column {absent[0]!r}; its columns: "
                + (", ".join(names) or "none")
            )
        clash = [c for c in SAMPLE_KEYS if c in names]
        if clash:
            raise AefsqlError(
                f"ChipDataset: the points table has column(s) {', '.join(clash)}, which each "
                "sample holds already: rename them first"
            )
        check_windows(1, size, len(chosen.bands))
        self.size, self.level, self.dequantize = int(size), int(level), bool(dequantize)
        self.years, self.crs = chosen.years, chosen.crs
        self.bands = tuple(BAND_NAMES.index(b) for b in chosen.bands)
        self.catalog = catalog
        self.options = dict(  # the session's, opened in each worker process
            cache_dir=cache_dir,
            headers=headers_option(headers, collection),
            concurrency=concurrency,
            allowed_hosts=allowed_hosts,
            storage_options=storage_options,
        )
        if geometry_column is not None:
            self.x, self.y = geo.points_from_wkb(table.column(geometry_column).to_pylist())
        else:
            self.x, self.y = (geo.floats(table.column(c)) for c in (x_column, y_column))
        self.columns = {
            name: _item_values(table.column(name))
            for name in table.schema.names
            if name != geometry_column
        }
        self._paths: np.ndarray | None = None  # each item's tile, found on first need
        self._session: Session | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.x.size * len(self.years)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices) -> list[dict]:
        """The items of one batch, read together: chips of one tile share their blocks."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} chips")
        check_windows(indices.size, self.size, len(self.bands))
        session = self.session()
        paths = self.tiles()[indices]
        rows, slots = np.divmod(indices, len(self.years))
        images = np.full(
            (indices.size, len(self.bands), self.size, self.size), NODATA, dtype=np.int8
        )
        epsg = np.zeros(indices.size, np.int64)
        transform = np.full((indices.size, 6), np.nan)
        for slot, members in group_indices(slots, np.arange(indices.size)).items():
            chips = read_chips(
                session,
                paths[members],
                self.x[rows[members]],
                self.y[rows[members]],
                self.crs,
                self.years[slot],
                self.size,
                self.bands,
                self.level,
                keep_blocks=True,  # the next batches may come back to these blocks
            )
            images[members], epsg[members] = chips.values, chips.epsg
            transform[members] = chips.transform
        return [
            self._item(int(r), self.years[s], images[k], int(epsg[k]), transform[k])
            for k, (r, s) in enumerate(zip(rows.tolist(), slots.tolist(), strict=True))
        ]

    def _item(self, row: int, year: int, image, code: int, transform) -> dict:
        n = self.size
        a, _, c, _, e, f = transform.tolist()
        bounds = [c, f + n * e, c + n * a, f]
        mask = (image != NODATA).all(axis=0)
        values = dequantize(image).astype(np.float32) if self.dequantize else image
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(values)),
            "mask": torch.from_numpy(mask),
            "bounds": torch.tensor(bounds, dtype=torch.float64),
            "crs": f"EPSG:{code}" if code else "",
            "transform": torch.from_numpy(transform.copy()),
            "year": year,
            "found": bool(code),
        }
        for name, values_ in self.columns.items():
            item[name] = values_[row]
        return item

    def session(self) -> Session:
        """This process's session: a worker (forked or spawned) opens its own."""
        if self._session is None or self._pid != os.getpid():
            self._session = open_session(self.catalog, **self.options)
            # Batches come back to the blocks of earlier ones: keep a few block positions'
            # 64 decoded bands (1 MiB each, for the published 1024-px blocks).
            self._session.engine.blocks = BlockCache(BLOCK_CACHE_BYTES)
            self._pid = os.getpid()
            warn_missing_years(self._session.catalog.tiles(), self.years)
        return self._session

    def tiles(self) -> np.ndarray:
        """The tile (path, or None) of each item, found once: it reads tile headers."""
        if self._paths is None:
            session = self.session()
            reader = session.engine.headers
            n = self.x.size
            found = np.full(len(self), None, dtype=object)
            for slot, year in enumerate(self.years):
                found[slot :: len(self.years)] = locate(
                    session.catalog.tiles(), reader, self.x, self.y, np.full(n, year), self.crs
                )
            self._paths = found
        return self._paths

    def tile_batches(
        self, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False
    ) -> TileBatchSampler:
        """A batch sampler for `DataLoader(batch_sampler=…)`: see TileBatchSampler."""
        return TileBatchSampler(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"] = None  # threads and sockets do not cross processes
        state["_pid"] = None
        return state


class TileBatchSampler(Sampler):
    """Batches of chips of one tile and year, in block order, so that a batch reads few
    blocks; with `shuffle`, the blocks come in a new random order each epoch (seeded by
    `seed` and the epoch), the batches of one block one after another, so that they find its
    decoded bands in the cache. Every item is in exactly one batch per epoch; with
    `drop_last`, a tile's last batch shorter than `batch_size` is left out."""

    def __init__(
        self, dataset: ChipDataset, batch_size: int, *, shuffle=True, seed=0, drop_last=False
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise AefsqlError(f"batch_size is a positive whole number, not {batch_size!r}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self._batches: list[list[int]] | None = None
        self._blocks: list[int] = []  # the block (a number per tile and year) of each batch

    def batches(self) -> list[list[int]]:
        """The batches in tile and block order (before any shuffle)."""
        if self._batches is None:
            self._batches, self._blocks = _tile_batches(
                self.dataset, self.batch_size, self.drop_last
            )
        return self._batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        batches = self.batches()
        if not self.shuffle:
            yield from batches
            return
        runs: dict[int, list[list[int]]] = {}
        for block, batch in zip(self._blocks, batches, strict=True):
            runs.setdefault(block, []).append(batch)
        order = list(runs)
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        self.epoch += 1
        for block in order:
            yield from runs[block]

    def __len__(self) -> int:
        return len(self.batches())


def _tile_batches(dataset: ChipDataset, batch_size: int, drop_last: bool):
    """(batches, the block of each): items grouped by (tile, year), each group sorted by the
    block, row and column of its point in the tile, cut into batches; a batch's block is a
    number for (tile, year, block of its first point)."""
    paths = dataset.tiles()
    session = dataset.session()
    keys = np.array(
        [f"{p}\0{i % len(dataset.years)}" for i, p in enumerate(paths.tolist())], dtype=object
    )
    batches, blocks = [], []
    for members in group_indices(keys, np.arange(len(dataset))).values():
        path = paths[members[0]]
        order, block = members, np.zeros(members.size, np.int64)
        if path is not None:
            header = session.engine.headers.headers_for([path], dataset.level)[path]
            rows_of = members // len(dataset.years)
            r, c, _ = point_pixels(
                path, header, dataset.x[rows_of], dataset.y[rows_of], dataset.crs
            )
            block = (r // header.block_height) * header.blocks_across + c // header.block_width
            sort = np.lexsort((c, r, block))
            order, block = members[sort], block[sort]
        first = len(blocks) and max(blocks) + 1  # block numbers of this group start here
        for start in range(0, order.size, batch_size):
            batch = order[start : start + batch_size]
            if drop_last and batch.size < batch_size:
                continue
            batches.append(batch.tolist())
            blocks.append(first + int(block[start]))
    return batches, blocks


def _item_values(column) -> list:
    """A points column's value for each item: a number column's NULL as NaN (DataLoader's
    collate refuses None, and a point with NULL coordinates is a row like any other); other
    columns' values as they are (a NULL as None)."""
    if pa.types.is_floating(column.type) or (
        pa.types.is_integer(column.type) and column.null_count
    ):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False).tolist()
    return column.to_pylist()
