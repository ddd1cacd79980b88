"""Pictures of an area: three principal components of its embeddings as RGB, or the cosine
similarity of every pixel to one place, written as a PNG.

The PNG is written here with zlib (a few lines of the PNG spec) rather than through an
imaging library: numpy is the only dependency. One PNG pixel is one grid pixel (square,
10 m), north at the top; nodata is transparent (and black where alpha is ignored).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .duck import Session, open_session
from .errors import AefsqlError
from .locate import locate
from .options import year_list
from .quantization import NODATA, dequantize
from .rasters import DEFAULT_MAX_BYTES, AreaGrid, plan_area, read_planned

CHUNK_PIXELS = 1 << 18  # pixels de-quantized at once: 64 bands x 8 bytes = 128 MiB
COVARIANCE_PIXELS = 1 << 18
STRETCH_PERCENTILES = (2, 98)


@dataclass(frozen=True)
class Picture:
    """What `picture` drew: RGBA rows north to south on `grid`, and the similarity map
    (NaN at nodata) when a reference was given."""

    rgba: np.ndarray  # uint8 (height, width, 4)
    grid: AreaGrid
    similarity: np.ndarray | None


def picture(
    area,
    year: int,
    path,
    *,
    crs=4326,
    reference: tuple[float, float] | None = None,
    catalog: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    **options,
) -> Picture:
    """Write a PNG of `area` in `year` to `path` (a local file) and return what it drew.

    `area` and `crs` as for `read_area` (the grid is its grid: north-up, one PNG pixel per
    10 m pixel). Default: three principal components of the de-quantized embeddings of the
    valid pixels (see `pca_rgb`) as red, green and blue, each stretched from its 2nd to its
    98th percentile.
    `reference=(lon, lat)`: instead, a grey map of each pixel's cosine similarity to that
    place's embedding in `year` (white 1, black 0 or below). A pixel with any band nodata, or
    outside the area or coverage, is transparent.
    """
    years = year_list(year)
    if len(years) != 1:
        raise AefsqlError(f"a picture shows one year, not {list(years)}")
    request = plan_area(area, years, crs=crs, max_bytes=max_bytes)
    session = open_session(catalog, **options)
    target = None if reference is None else reference_embedding(session, reference, years[0])
    raster = read_planned(session, request)
    if raster.grid.width == 0 or raster.grid.height == 0:
        raise AefsqlError("the area holds no pixel centre: there is nothing to draw")
    values = raster.values[0]
    if target is None:
        drawn = Picture(pca_rgb(values), raster.grid, None)
    else:
        similar = similarity(values, target)
        drawn = Picture(grey(similar), raster.grid, similar)
    write_png(path, drawn.rgba)
    return drawn


def numbers_from(text: str, count: int, name: str) -> list[float]:
    """'11.99,45.0' -> [11.99, 45.0], exactly `count` numbers (the CLI's --bbox, --similar-to)."""
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != count:
        raise AefsqlError(f"{name} {text!r}: expected {count} numbers separated by commas")
    return numbers


def reference_embedding(session: Session, reference, year: int) -> np.ndarray:
    """The int8 embedding (64,) at a (lon, lat) in `year`, from the tile aef_locate picks."""
    try:
        lon, lat = (float(v) for v in reference)
    except (TypeError, ValueError):
        raise AefsqlError(f"reference is (lon, lat), not {reference!r}") from None
    path = locate(session.catalog.tiles(), session.sampler.header_reader, [lon], [lat], [year])[0]
    if path is None:
        raise AefsqlError(f"reference ({lon}, {lat}) lies in no tile of {year}")
    samples = session.sampler.sample([path], [lon], [lat])
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
    bands, height, width = values.shape
    rgba = np.zeros((height * width, 4), dtype=np.uint8)
    pixels = _valid_pixels(values)
    if pixels.size == 0:
        return rgba.reshape(height, width, 4)
    # The covariance costs 2 x bands² FLOP a pixel (8 GFLOP a million): a regular sample of
    # 262,144 pixels pins a 64 x 64 covariance to ~0.2%; the projection takes every pixel.
    sample = pixels[:: -(-pixels.size // COVARIANCE_PIXELS)]
    # One pass (sums of x and x xᵀ): de-quantized values are at most 1, so float64 loses
    # nothing that matters.
    total, outer = np.zeros(bands), np.zeros((bands, bands))
    for _, v in _chunks(sample, values):
        total += v.sum(axis=1)
        outer += v @ v.T
    mean = total / sample.size
    _, vectors = np.linalg.eigh(outer / sample.size - np.outer(mean, mean))
    axes = vectors[:, ::-1][:, :3].T  # eigh sorts ascending
    # An eigenvector's sign is arbitrary: fix it so the same data gives the same colours.
    axes = axes * np.where(axes[range(len(axes)), np.abs(axes).argmax(axis=1)] < 0, -1, 1)[:, None]
    components = np.zeros((pixels.size, 3), dtype=np.float32)
    for part, v in _chunks(pixels, values):
        components[part, : len(axes)] = (axes @ v - (axes @ mean)[:, None]).T
    low, high = np.percentile(components, STRETCH_PERCENTILES, axis=0)
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


def write_png(path, rgba: np.ndarray) -> None:
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
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)))
        f.write(chunk(b"IEND", b""))
