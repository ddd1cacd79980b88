"""aefsql: AlphaEarth Foundations satellite embeddings, queryable from SQL (DuckDB)."""

from .api import (
    build_collection,
    change,
    export,
    grid,
    sample_points,
    similarity,
    write_headers,
    zonal,
)
from .duck import connect, register
from .errors import (
    AefsqlError,
    CatalogError,
    RangeReadError,
    TiffFormatError,
    UnsupportedCodecError,
)
from .kernels.maps import write_map
from .kernels.pictures import picture
from .kernels.rasters import read_area

__version__ = "0.1.0"

__all__ = [
    "AefsqlError",
    "CatalogError",
    "RangeReadError",
    "TiffFormatError",
    "UnsupportedCodecError",
    "__version__",
    "build_collection",
    "change",
    "connect",
    "export",
    "grid",
    "picture",
    "read_area",
    "register",
    "sample_points",
    "similarity",
    "write_headers",
    "write_map",
    "zonal",
]
