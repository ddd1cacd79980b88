"""The demo collection: a few AEF-format tiles, two years, both hemispheres, written locally.

Pixel values are synthetic but shaped like embeddings: each pixel is a unit vector in 64
dimensions, a smooth blend of a few "land cover" prototypes, quantised with the inverse of the
publisher's de-quantisation. So nearby places and places of the same cover are similar.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pyproj import Transformer

from .aef import BAND_COUNT, NODATA, PIXEL_METRES, quantize
from .errors import AefsqlError
from .geometry.geo import WGS84, utm_label
from .writer import TileEntry, write_aef_cog, write_index

YEARS = (2023, 2024)

# Named places of the demo: (name, lon, lat).
DEMO_POINTS = [
    ("san_francisco", -122.4194, 37.7749),
    ("san_francisco_mission", -122.4148, 37.7599),
    ("lima", -77.0428, -12.0464),
    ("nairobi", 36.8219, -1.2921),
    ("seam_12e", 12.0005, 45.0),  # covered by a 32N and a 33N tile: zone 33 wins
    ("lagoon_nodata", 12.03, 45.006),  # on a nodata patch
    ("mid_atlantic", -30.0, 30.0),  # outside every tile
]

# Tiles: (EPSG, lon, lat of the tile's centre). The two at 12°E overlap across the zone seam.
DEMO_TILES = [
    (32610, -122.42, 37.77),
    (32718, -77.04, -12.05),
    (32737, 36.82, -1.29),
    (32632, 11.985, 45.0),
    (32633, 12.015, 45.0),
]
# A nodata disc (e.g. water masked by the publisher): lon, lat, radius in metres.
NODATA_DISC = (12.03, 45.006, 600.0)

PROTOTYPES = np.random.default_rng(2023).normal(size=(5, BAND_COUNT))
PROTOTYPES /= np.linalg.norm(PROTOTYPES, axis=1, keepdims=True)


def write_demo_collection(folder, *, years=YEARS, tile_px: int = 512) -> Path:
    """Write the demo tiles for `years`, their index.parquet and places.csv into `folder`;
    return the index path. Existing files are rewritten, so the result is always the same."""
    folder = _writable_folder(Path(folder))
    write_places(folder)
    entries = []
    for year in years:
        for k, (epsg, lon, lat) in enumerate(DEMO_TILES):
            x_centre, y_centre = Transformer.from_crs(WGS84, epsg, always_xy=True).transform(
                lon, lat
            )
            half = tile_px * PIXEL_METRES / 2
            west = np.floor((x_centre - half) / PIXEL_METRES) * PIXEL_METRES
            south = np.floor((y_centre - half) / PIXEL_METRES) * PIXEL_METRES
            rel = f"{year}/{utm_label(epsg)}/demo{k}-{0:010d}-{0:010d}.tiff"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            data = _embeddings(epsg, west, south, tile_px, year)
            write_aef_cog(
                folder / rel,
                data,
                epsg=epsg,
                transform=(PIXEL_METRES, 0.0, west, 0.0, PIXEL_METRES, south),
                block_size=256,
            )
            east, north = west + tile_px * PIXEL_METRES, south + tile_px * PIXEL_METRES
            entries.append(TileEntry(year, rel, epsg, west, south, east, north))
    return write_index(folder / "index.parquet", entries)


def write_places(folder) -> Path:
    """places.csv (name, lon, lat): the demo's named places, beside its index, so that
    docs/functions.md's examples run on them (`CREATE TABLE places AS FROM 'places.csv'`)."""
    path = Path(folder) / "places.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["name,lon,lat", *(f"{name},{lon},{lat}" for name, lon, lat in DEMO_POINTS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _writable_folder(folder: Path) -> Path:
    """`folder`, made if missing; refused in one line, before any tile is computed, when it
    cannot be made or written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AefsqlError(f"cannot write the demo to {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise AefsqlError(f"cannot write the demo to {folder}: permission denied")
    return folder


def _embeddings(epsg: int, west: float, south: float, size: int, year: int) -> np.ndarray:
    """int8 (64, size, size), south-up: row 0 is the southern edge."""
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    x = west + (cols + 0.5) * PIXEL_METRES
    y = south + (rows + 0.5) * PIXEL_METRES
    lon, lat = Transformer.from_crs(epsg, WGS84, always_xy=True).transform(x, y)
    # Cover weights: smooth fields of lon/lat, so tiles agree where they overlap.
    phase = 0.8 * (year - YEARS[0])
    weights = np.stack(
        [
            np.sin(lon * 300 + k * 1.7 + phase) + np.cos(lat * 350 - k * 2.3)
            for k in range(len(PROTOTYPES))
        ]
    )
    weights = np.exp(3.0 * weights).astype(np.float32)
    vectors = np.tensordot(weights, PROTOTYPES.astype(np.float32), axes=(0, 0))  # size x size x 64
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    data = np.moveaxis(quantize(vectors), -1, 0)
    disc_lon, disc_lat, radius = NODATA_DISC
    dx = (lon - disc_lon) * 111320 * np.cos(np.radians(disc_lat))
    dy = (lat - disc_lat) * 110540
    data[:, np.hypot(dx, dy) < radius] = NODATA
    return np.ascontiguousarray(data)
