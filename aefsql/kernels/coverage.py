"""Why a call finds nothing: per year, one line saying why an area or a set of points meets
no tile, and the fix — from the catalog alone (no file is read).

The one home of these diagnoses: `aef_area_plan`'s `note` column in SQL, the warnings of the
Python entry points (`sample_points`, `read_area`, `picture`, the datasets and Spark: the
`warn_*` functions here) and the CLI's all come from here.
The usual mistakes it recognises: a year the catalog lacks, lat/lon given in lon/lat's
place, lon/lat numbers passed with a projected `crs`, projected numbers passed as lon/lat,
and a place simply outside coverage.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..catalog.index import TileTable
from ..errors import AefsqlError, user_stacklevel
from ..geometry import geo
from ..geometry.areas import Area, projected
from ..options import Mention
from .locate import locate
from .pixels import candidate_tiles

# What a sampled (row, year) holds, and so why its bands are NULL (aef_sample_points'
# `status`, as geotessera's probe says it; aef_zonal's and aef_chips' by the same rule): read
# with every band asked for; read, but a band is nodata; in no tile of that year (or its
# coordinates are NULL or invalid); the catalog has no tile of that year at all; its file
# could not be read (on_error := 'null').
STATUSES = ("valid", "nodata", "outside", "no_year", "error")


def point_status_codes(covered, complete, failed, years, missing) -> np.ndarray:
    """int8: the index in STATUSES of each sampled point's word, from `covered` (inside a
    raster), `complete` (every band asked for has a value), `failed` (its file could not be
    read), `years` (the year it was sampled for) and `missing` (years the catalog has no
    tile of); bool and int arrays. The first that applies of error, no_year, valid, nodata,
    outside."""
    code = np.where(covered, np.where(complete, 0, 1), 2).astype(np.int8)
    if len(missing):
        code[np.isin(years, list(missing))] = 3
    code[failed] = 4
    return code


def zonal_status_codes(pixels, nodata_pixels, failed, years, missing) -> np.ndarray:
    """The STATUSES codes of each (polygon, year) of aef_zonal, from its `pixels` and
    `nodata_pixels` (int arrays; the centroid's stand-in pixel counts) and `failed` (its row
    has an aef_error): valid when some pixel is valid, nodata when pixels were read but all
    are nodata, outside when none was (a NULL geometry too); then as `point_status_codes`."""
    pixels, nodata_pixels = np.asarray(pixels), np.asarray(nodata_pixels)
    return point_status_codes(pixels > 0, pixels > nodata_pixels, failed, years, missing)


def chip_status_codes(in_tile, valid_pixels, size, failed, years, missing) -> np.ndarray:
    """The STATUSES codes of each (point, year) of aef_chips, from `in_tile` (the chip's
    centre lies in a tile), `valid_pixels` and `size` (int arrays): valid when all size x
    size pixels are, nodata when any is not (nodata in the file, or in no tile); outside
    when the centre is in no tile; then as `point_status_codes`."""
    complete = np.asarray(valid_pixels) == np.asarray(size) ** 2
    return point_status_codes(in_tile, complete, failed, years, missing)


def missing_years(tiles: TileTable, years) -> list[int]:
    """The years the catalog has no tile of."""
    return sorted(set(int(y) for y in years) - set(np.unique(tiles.year).tolist()))


def missing_years_note(tiles: TileTable, missing) -> str:
    """What to say of years the catalog has no tile of (`missing_years`)."""
    have = np.unique(tiles.year).tolist()
    listing = ", ".join(map(str, have)) if len(have) <= 12 else f"{have[0]}–{have[-1]}"
    return (
        f"the catalog has no tile of year(s) {', '.join(map(str, missing))} "
        f"(it has {listing or 'none'})"
    )


def area_notes(tiles: TileTable, area: Area, years, host: str = "sql") -> dict[int, str | None]:
    """Per year: None when some tile of that year meets the area (by the catalog's lon/lat
    boxes), else why none does and the fix, its parameters named as `host` names them
    (options.HOSTS: `crs := 32633` in SQL, `crs=32633` in Python)."""
    try:
        lonlat = projected(area, geo.WGS84)
    except AefsqlError as exc:
        lonlat, unprojectable = None, str(exc)
    notes: dict[int, str | None] = {}
    absent = set(missing_years(tiles, years))
    for year in (int(y) for y in years):
        if year in absent:
            notes[year] = missing_years_note(tiles, [year])
        elif area.empty:
            notes[year] = "the area is empty: it has no ring"
        elif lonlat is None:
            notes[year] = unprojectable
        elif candidate_tiles(tiles, lonlat, year):
            notes[year] = None
        else:
            points = np.concatenate(area.rings) if area.rings else np.zeros((0, 2))
            notes[year] = _outside_note(tiles, points[:, 0], points[:, 1], area.epsg, year, host)
    return notes


def points_note(tiles: TileTable, x, y, crs: int, year: int, host: str = "sql") -> str:
    """Why no point of (x, y) in EPSG `crs` lies in a tile of `year` (the caller found none),
    worded for `host` as `area_notes` is."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if year in missing_years(tiles, [year]):
        return missing_years_note(tiles, [year])
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return "every point's coordinates are NULL or not numbers"
    x, y = x[finite], y[finite]
    if crs == geo.WGS84 and not geo.valid_lonlat(x, y).any():
        return (
            "no point is within lon/lat range (-180..180, -90..90): if the coordinates "
            f"are projected, say so with {_crs(host)} (e.g. {_crs(host, 32633)})"
        )
    return _outside_note(tiles, x, y, crs, year, host)


def _outside_note(tiles: TileTable, x, y, crs: int, year: int, host: str) -> str:
    """Why coordinates that meet no tile of `year` may be wrong, else 'outside coverage'."""
    if crs != geo.WGS84 and _looks_lonlat(x, y) and geo.is_projected(crs):
        return (
            f"the coordinates look like lon/lat, but {_crs(host, crs)} is projected: "
            f"drop {_crs(host)} (lon/lat is the default) or give projected coordinates"
        )
    if crs == geo.WGS84 and geo.valid_lonlat(y, x).all():
        found = locate(tiles, None, y, x, np.full(x.size, year))
        if any(p is not None for p in found):
            return "coordinates look swapped (lat, lon)?: give longitude first, then latitude"
    return f"outside coverage: the catalog has no tile of year {year} there"


def _crs(host: str, value=None) -> str:
    """The crs parameter as `host` writes it: bare, or with an EPSG code."""
    return Mention("crs").phrased(host) if value is None else Mention("crs", value).phrased(host)


def _looks_lonlat(x, y) -> bool:
    """Every coordinate within lon/lat range: no projected place near enough the false
    origin to be an AEF tile gives such numbers."""
    return bool(x.size) and bool(geo.valid_lonlat(x, y).all())


def warn_empty_area(
    tiles: TileTable, area: Area, years, outcome: str = "its pixels come back as nodata"
) -> list[str]:
    """Warn, once per reason, when some year of `area` meets no tile: the year is missing,
    the area is outside coverage, or its coordinates look swapped or in the wrong CRS (the
    diagnosis of `area_notes`, as aef_area_plan's `note`), saying what the caller gives for
    it (`outcome`)."""
    notes = area_notes(tiles, area, years, host="python")
    reasons = list(dict.fromkeys(note for note in notes.values() if note))
    for reason in reasons:
        warnings.warn(f"area: {reason}; {outcome}", stacklevel=user_stacklevel())
    return reasons


def warn_uncovered_points(tiles: TileTable, x, y, crs: int, years, found_years) -> list[str]:
    """Warn for each year (the catalog has) in which no point lies in a tile, and why
    (`points_note`): swapped lon/lat, the wrong CRS, outside coverage."""
    missing = set(missing_years(tiles, years))
    empty = [y_ for y_ in years if y_ not in missing and y_ not in set(found_years)]
    reasons = list(
        dict.fromkeys(points_note(tiles, x, y, crs, year, host="python") for year in empty)
    )
    for reason in reasons:
        warnings.warn(f"no point lies in a tile: {reason}", stacklevel=user_stacklevel())
    return reasons


def warn_missing_years(
    tiles: TileTable, years, outcome: str = "their rows come back with NULL bands"
) -> list[int]:
    """Warn about the years the catalog has no tile of, and what the caller gets instead."""
    missing = missing_years(tiles, years)
    if missing:
        note = missing_years_note(tiles, missing)
        warnings.warn(f"{note}: {outcome}", stacklevel=user_stacklevel())
    return missing
