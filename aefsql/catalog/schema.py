"""The AEF index catalog's schema, once: the roles a catalog's columns play, the names each
role is found by, and the one schema the published index has (as aefsql's writer writes it)
and the normalized catalog is read in (as aef_index() returns it)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class CatalogColumns:
    """The source column playing each role; None where the catalog has none."""

    year: str
    path: str
    wgs84_west: str
    wgs84_south: str
    wgs84_east: str
    wgs84_north: str
    fid: str | None = None
    crs: str | None = None
    utm_zone: str | None = None
    utm_west: str | None = None
    utm_south: str | None = None
    utm_east: str | None = None
    utm_north: str | None = None
    geom: str | None = None


# Candidate source names per role, first match wins.
ROLE_NAMES = {
    "fid": ("fid", "id"),
    "year": ("year",),
    "path": ("path", "href", "url"),
    "crs": ("crs",),
    "utm_zone": ("utm_zone",),
    "wgs84_west": ("wgs84_west", "west", "xmin"),
    "wgs84_south": ("wgs84_south", "south", "ymin"),
    "wgs84_east": ("wgs84_east", "east", "xmax"),
    "wgs84_north": ("wgs84_north", "north", "ymax"),
    "utm_west": ("utm_west",),
    "utm_south": ("utm_south",),
    "utm_east": ("utm_east",),
    "utm_north": ("utm_north",),
    "geom": ("geom", "geometry"),
}

# The published index's columns: each role by its first name.
PUBLIC_COLUMNS = CatalogColumns(**{role: names[0] for role, names in ROLE_NAMES.items()})

WGS84_SIDES = ("wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
UTM_SIDES = ("utm_west", "utm_south", "utm_east", "utm_north")
REQUIRED_ROLES = ("year", "path", *WGS84_SIDES)

# The normalized catalog aef_index() reads: one schema whatever the source's column names.
INDEX_SCHEMA = pa.schema(
    [
        ("fid", pa.int64()),
        ("year", pa.int32()),
        ("path", pa.string()),
        ("crs", pa.string()),
        ("utm_zone", pa.string()),
        *((name, pa.float64()) for name in WGS84_SIDES + UTM_SIDES),
        ("geom", pa.binary()),
    ]
)
# The published index: the same columns (each role by its first name), in the publisher's
# order, footprint second.
PUBLISHED_SCHEMA = pa.schema(
    INDEX_SCHEMA.field(name)
    for name in ("fid", "geom", "year", "path", "crs", "utm_zone", *UTM_SIDES, *WGS84_SIDES)
)
# What locating points needs: the narrow part, read without the (large) footprints.
TILE_ROLES = ("year", "path", "crs", "utm_zone", *WGS84_SIDES, *UTM_SIDES)
