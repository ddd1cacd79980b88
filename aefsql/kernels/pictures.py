"""Pictures of an area: three principal components of its embeddings as RGB, or the cosine
similarity of every pixel to one place, written as a PNG.

The PNG is written here with zlib (a few lines of the PNG spec) rather than through an
imaging library: numpy is the only dependency. One PNG pixel is one grid pixel (square,
10 m), north at the top; nodata is transparent (and black where alpha is ignored).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pyproj

from ..aef import BAND_NAMES, NODATA, dequantize
from ..errors import AefsqlError
from ..options import Mention, OptionError, headers_option, speaks, year_list
from ..session import Session, open_session
from ..storage.store import DEFAULT_CONCURRENCY
from . import points
from .budgets import RASTER_BYTES
from .coverage import area_notes
from .locate import locate
from .rasters import AreaGrid, plan_area, read_planned

CHUNK_PIXELS = 1 << 18  # pixels de-quantized at once: 64 bands x 8 bytes = 128 MiB
COVARIANCE_PIXELS = 1 << 18
STRETCH_PERCENTILES = (2, 98)


@dataclass(frozen=True, repr=False)
class PcaAxes:
    """The colours of a PCA picture: three principal axes of the de-quantized embeddings
    (`bands` of them), their mean, and the stretch of each component (`low` black, `high`
    full colour). Give it to another `picture(axes=...)` and the same embedding gets the
    same colour there."""

    bands: tuple[str, ...]
    mean: np.ndarray  # (bands,)
    axes: np.ndarray  # (3, bands): at most 3 rows
    low: np.ndarray  # (3,)
    high: np.ndarray  # (3,)

    def __repr__(self) -> str:
        return f"PcaAxes({len(self.axes)} components of {len(self.bands)} bands)"


@dataclass(frozen=True, repr=False)
class Picture:
    """What `picture` drew: RGBA rows north to south on `grid` (one PNG pixel a grid pixel),
    the similarity map (NaN at nodata) when a reference was given, else the PCA `axes` that
    coloured it. A notebook shows it as its PNG."""

    rgba: np.ndarray  # uint8 (height, width, 4)
    grid: AreaGrid
    similarity: np.ndarray | None
    year: int | None = None
    axes: PcaAxes | None = None

    def __repr__(self) -> str:
        height, width, _ = self.rgba.shape
        kind = "PCA" if self.similarity is None else "similarity"
        return (
            f"<Picture {kind} of {self.year}: {width} x {height} pixels of "
            f"{abs(self.grid.transform.a):g} m, EPSG:{self.grid.epsg}>"
        )

    def _repr_png_(self) -> bytes:
        return png_bytes(self.rgba)

    def save(self, path) -> None:
        """Write the picture as a PNG to `path` (a local file), and its georeferencing beside
        it: a world file (`.pgw`; `.wld` for another suffix) and GDAL's `.aux.xml` (with the
        CRS), so that QGIS and rasterio place it. A GeoTIFF: `aefsql.write_map`."""
        write_png(path, self.rgba)
        write_georeferencing(path, self.grid)


@speaks("python")
def picture(
    area,
    year,
    path=None,
    *,
    bands=None,
    crs=4326,
    max_bytes: int = RASTER_BYTES,
    level: int = 0,
    reference: tuple[float, float] | None = None,
    axes: PcaAxes | None = None,
    catalog: str | None = None,
    cache_dir: str | None = None,
    headers: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    allowed_hosts: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    collection: str | None = None,
):
    """A picture of `area` in `year`, written as a PNG to `path` when given (a local file);
    returns the `Picture` (shown as an image in a notebook).

    `area`, `crs`, `bands`, `level` and `max_bytes` as for `read_area` (the grid is its grid:
    north-up, one PNG pixel per pixel). Default: three principal components of the
    de-quantized embeddings of the valid pixels (see `pca_rgb`) as red, green and blue, each
    stretched from its 2nd to its 98th percentile.
    `year` a list, e.g. [2023, 2024]: one picture per year, in a list, on the same grid and
    with the same axes and stretch (computed over every year's pixels), so that the same
    embedding has the same colour in each and a change shows; `path` then names a file per
    year with `{year}` in it ('area-{year}.png').
    `axes`: the `Picture.axes` of an earlier picture, to colour this one the same way.
    `reference=(lon, lat)`: instead, a grey map of each pixel's cosine similarity to that
    place's embedding in the same year (white 1, black 0 or below).
    A pixel with any band nodata, or outside the area or coverage, is transparent; a picture
    with no valid pixel at all is an error. `catalog`, `cache_dir`, `headers`,
    `concurrency`, `allowed_hosts`, `storage_options` and `collection` (deprecated alias of
    `headers`): as for `aefsql.connect`.
    """
    several = _is_sequence(year)
    years = year_list(year)
    paths = _paths(path, years, several)
    if reference is None:
        check_pca_bands(bands)
    if reference is not None and axes is not None:
        raise AefsqlError("axes colour a PCA picture; a similarity map (reference) has none")
    request = plan_area(area, years, bands=bands, crs=crs, max_bytes=max_bytes, level=level)
    if axes is not None and axes.bands != request.bands:
        raise AefsqlError(
            f"axes were made from {len(axes.bands)} bands, this picture has "
            f"{len(request.bands)}: pass the same bands"
        )
    for written in paths:  # before anything is read
        if written is not None:
            check_writable(written)
    session = open_session(
        catalog,
        cache_dir=cache_dir,
        headers=headers_option(headers, collection),
        concurrency=concurrency,
        allowed_hosts=allowed_hosts,
        storage_options=storage_options,
    )
    wanted = [BAND_NAMES.index(b) for b in request.bands]
    targets = (
        None
        if reference is None
        else [reference_embedding(session, reference, y, wanted) for y in years]
    )
    raster = read_planned(session, request)
    if raster.grid.width == 0 or raster.grid.height == 0:
        raise AefsqlError("the area holds no pixel centre: there is nothing to draw")
    if targets is None:
        colours, axes = pca_pictures(list(raster.values), axes, request.bands)
        drawn = [
            Picture(rgba, raster.grid, None, y, axes)
            for rgba, y in zip(colours, years, strict=True)
        ]
    else:
        drawn = []
        for values, target, y in zip(raster.values, targets, years, strict=True):
            similar = similarity(values, target)
            drawn.append(Picture(grey(similar), raster.grid, similar, y))
    empty = [p.year for p in drawn if not p.rgba[..., 3].any()]
    if empty:
        # Why, as aef_area_plan's note says it (aefsql/kernels/coverage.py); no note: the tiles
        # there hold nodata only.
        notes = area_notes(session.catalog.tiles(), request.area, empty, host="python")
        reasons = dict.fromkeys(notes[y] or "every pixel of the area is nodata" for y in empty)
        raise AefsqlError(f"nothing to draw in {', '.join(map(str, empty))}: {'; '.join(reasons)}")
    for picture_, written in zip(drawn, paths, strict=True):
        if written is not None:
            picture_.save(written)
    return drawn if several else drawn[0]


def _is_sequence(value) -> bool:
    return not isinstance(value, str | bytes) and isinstance(value, Iterable)


def _paths(path, years, several: bool) -> list:
    """The file each year's picture is written to (None: not written)."""
    if path is None:
        return [None] * len(years)
    if not several:
        return [path]
    text = str(path)
    if "{year}" not in text:
        raise AefsqlError(
            f"a picture of several years is a file per year: put {{year}} in the path "
            f"({text!r}), e.g. 'area-{{year}}.png'"
        )
    return [text.replace("{year}", str(y)) for y in years]


def numbers_from(text: str, count: int, name: str) -> list[float]:
    """'11.99,45.0' -> [11.99, 45.0], exactly `count` numbers (the CLI's --bbox, --similar-to)."""
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != count:
        raise AefsqlError(f"{name} {text!r}: expected {count} numbers separated by commas")
    return numbers


def check_pca_bands(bands) -> None:
    """A PCA picture's first three components are its red, green and blue: it needs three
    bands or more (fewer left green and blue black, unsaid)."""
    if bands is not None and not isinstance(bands, str) and 0 < len(list(bands)) < 3:
        raise OptionError(
            "{}: a PCA picture needs 3 bands or more (its first three components are red, "
            "green and blue); one band is drawn as a map of kind 'bands'",
            Mention("bands", list(bands)),
        )


def reference_embedding(session: Session, reference, year: int, bands=None) -> np.ndarray:
    """The int8 embedding (of `bands`, indices; default all 64) at a (lon, lat) in `year`,
    from the tile aef_locate picks."""
    try:
        lon, lat = (float(v) for v in reference)
    except (TypeError, ValueError):
        raise AefsqlError(f"reference is (lon, lat), not {reference!r}") from None
    path = locate(session.catalog.tiles(), session.engine.headers, [lon], [lat], [year])[0]
    if path is None:
        raise AefsqlError(f"reference ({lon}, {lat}) lies in no tile of {year}")
    samples = points.sample(session.engine, [path], [lon], [lat], bands)
    if not samples.valid.all():
        raise AefsqlError(f"reference ({lon}, {lat}) is nodata in {year}: pick another place")
    return samples.values[0]


def _valid_pixels(values: np.ndarray) -> np.ndarray:
    """Indices of the pixels of (bands, height, width) with no band nodata."""
    return np.flatnonzero((values.reshape(values.shape[0], -1) != NODATA).all(axis=0))


def _chunks(pixels: np.ndarray, values: np.ndarray):
    """(slice of `pixels`, their de-quantized embeddings (bands, n)), a chunk at a time: the
    float64 copy of a whole area would be 8 times its int8 values. Band-major, so that
    BLAS multiplies contiguous rows."""
    flat = values.reshape(values.shape[0], -1)
    for start in range(0, pixels.size, CHUNK_PIXELS):
        part = slice(start, start + CHUNK_PIXELS)
        # take(): a C-ordered copy (fancy indexing may hand back a Fortran-ordered one,
        # which makes the matrix products several times slower)
        yield part, dequantize(np.take(flat, pixels[part], axis=1))


def pca_rgb(values: np.ndarray) -> np.ndarray:
    """RGBA (height, width, 4) of int8 embeddings (bands, height, width): the first three
    principal components of the valid pixels, each stretched 2-98 percentile to 0..255.
    The components come from at most COVARIANCE_PIXELS of them, evenly spaced."""
    return pca_pictures([values])[0][0]


def pca_pictures(arrays: list[np.ndarray], axes: PcaAxes | None = None, bands=None):
    """([RGBA (height, width, 4)] of each int8 array (bands, height, width), the PcaAxes
    that coloured them): `axes`, else those of all the arrays' valid pixels together (None
    if there is none), so that one embedding has one colour in every array. `bands`: the
    arrays' band names (default A00, A01, …)."""
    valid = [_valid_pixels(v) for v in arrays]
    if axes is None:
        found = _principal_axes(arrays, valid)
        if found is None:
            return [_rgba(v.shape, p, None) for v, p in zip(arrays, valid, strict=True)], None
        mean, vectors = found
    else:
        mean, vectors = axes.mean, axes.axes
    components = []
    for values, pixels in zip(arrays, valid, strict=True):
        projected_ = np.zeros((pixels.size, 3), dtype=np.float32)
        for part, v in _chunks(pixels, values):
            projected_[part, : len(vectors)] = (vectors @ v - (vectors @ mean)[:, None]).T
        components.append(projected_)
    if axes is None:
        low, high = np.percentile(np.concatenate(components), STRETCH_PERCENTILES, axis=0)
        names = BAND_NAMES[: arrays[0].shape[0]] if bands is None else bands
        axes = PcaAxes(tuple(names), mean, vectors, low, high)
    colours = [
        _rgba(values.shape, pixels, comps, axes)
        for values, pixels, comps in zip(arrays, valid, components, strict=True)
    ]
    return colours, axes


def _principal_axes(arrays, valid):
    """(mean (bands,), axes (3, bands)) of the valid pixels of all arrays; None if none."""
    bands = arrays[0].shape[0]
    count = sum(p.size for p in valid)
    if count == 0:
        return None
    # The covariance costs 2 x bands² FLOP a pixel (8 GFLOP a million): a regular sample of
    # 262,144 pixels pins a 64 x 64 covariance to ~0.2%; the projection takes every pixel.
    step = -(-count // COVARIANCE_PIXELS)
    # One pass (sums of x and x xᵀ): de-quantized values are at most 1, so float64 loses
    # nothing that matters.
    total, outer, sampled = np.zeros(bands), np.zeros((bands, bands)), 0
    for values, pixels in zip(arrays, valid, strict=True):
        sample = pixels[::step]
        sampled += sample.size
        for _, v in _chunks(sample, values):
            total += v.sum(axis=1)
            outer += v @ v.T
    mean = total / sampled
    _, vectors = np.linalg.eigh(outer / sampled - np.outer(mean, mean))
    axes = vectors[:, ::-1][:, :3].T  # eigh sorts ascending
    # An eigenvector's sign is arbitrary: fix it so the same data gives the same colours.
    axes = axes * np.where(axes[range(len(axes)), np.abs(axes).argmax(axis=1)] < 0, -1, 1)[:, None]
    return mean, axes


def _rgba(shape, pixels, components, axes: PcaAxes | None = None) -> np.ndarray:
    """RGBA (height, width, 4): the components of `pixels` stretched by `axes`, the other
    pixels transparent."""
    _, height, width = shape
    rgba = np.zeros((height * width, 4), dtype=np.uint8)
    if components is not None and pixels.size:
        low, high = axes.low, axes.high
        scaled = (components - low) / np.where(high > low, high - low, 1.0)
        rgba[pixels, :3] = np.rint(np.clip(scaled, 0.0, 1.0) * 255)
        rgba[pixels, 3] = 255
    return rgba.reshape(height, width, 4)


def similarity(values: np.ndarray, embedding) -> np.ndarray:
    """Cosine similarity (height, width) of each pixel's de-quantized embedding to
    `embedding` (int8, one value per band); NaN where a band is nodata."""
    bands, height, width = values.shape
    out = np.full(height * width, np.nan)
    reference = dequantize(np.asarray(embedding).reshape(bands))
    reference = reference / np.linalg.norm(reference)
    pixels = _valid_pixels(values)
    with np.errstate(invalid="ignore", divide="ignore"):  # an all-zero vector has no angle
        for part, v in _chunks(pixels, values):
            out[pixels[part]] = (reference @ v) / np.sqrt(np.einsum("ij,ij->j", v, v))
    return out.reshape(height, width)


def grey(similar: np.ndarray) -> np.ndarray:
    """RGBA of a similarity map: white at 1, black at 0 and below, transparent where NaN."""
    rgba = np.zeros((*similar.shape, 4), dtype=np.uint8)
    shown = np.isfinite(similar)
    rgba[shown, :3] = np.rint(np.clip(similar[shown], 0.0, 1.0) * 255)[:, None]
    rgba[shown, 3] = 255
    return rgba


def write_georeferencing(path, grid: AreaGrid) -> None:
    """The files that place an image of `grid` at `path`: a world file (the centre of the
    top-left pixel, as the format has it) and a GDAL PAM `.aux.xml` holding the CRS, which a
    world file cannot say."""
    path = Path(path)
    t = grid.transform
    world = path.with_suffix(".pgw") if path.suffix.lower() == ".png" else path.with_suffix(".wld")
    lines = (t.a, t.d, t.b, t.e, t.c + (t.a + t.b) / 2, t.f + (t.d + t.e) / 2)
    world.write_text("".join(f"{v!r}\n" for v in lines))
    wkt = escape(pyproj.CRS.from_epsg(grid.epsg).to_wkt())
    transform = ", ".join(repr(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    Path(f"{path}.aux.xml").write_text(
        f"<PAMDataset>\n  <SRS>{wkt}</SRS>\n  <GeoTransform>{transform}</GeoTransform>\n"
        "</PAMDataset>\n"
    )


def write_png(path, rgba: np.ndarray) -> None:
    """Write `png_bytes(rgba)` to `path`."""
    Path(path).write_bytes(png_bytes(rgba))


def png_bytes(rgba: np.ndarray) -> bytes:
    """An 8-bit RGBA PNG: signature, IHDR, one zlib stream of rows (each led by filter
    byte 0, "none"), IEND; every chunk with its length and CRC."""
    height, width, _ = rgba.shape
    rows = np.concatenate(
        [np.zeros((height, 1), np.uint8), np.ascontiguousarray(rgba, np.uint8).reshape(height, -1)],
        axis=1,
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            chunk(b"IEND", b""),
        )
    )


def check_writable(path) -> None:
    """Refuse an output path that cannot be written (its folder missing, read-only, or a folder
    itself), before anything is read: one line, naming the path."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise AefsqlError(f"cannot write {path}: it is a folder")
    if not folder.is_dir():
        raise AefsqlError(f"cannot write {path}: no folder {folder}")
    # Opened, not asked (os.access): root may write anywhere by mode bits, yet not on a
    # read-only or virtual filesystem (/proc). A file made here is removed again.
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as exc:
        raise AefsqlError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not existed:
        target.unlink(missing_ok=True)
