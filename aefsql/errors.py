"""The exceptions aefsql raises: one base class, a few specific kinds."""

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL without credentials or query string (signed URLs carry secrets there): what
    error messages show."""
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class AefsqlError(Exception):
    """Base class of every error aefsql raises on purpose."""


class CatalogError(AefsqlError):
    """The index catalog cannot be read or lacks what aefsql needs."""


class TiffFormatError(AefsqlError):
    """A file is not a TIFF aefsql can read: truncated, corrupt or an unsupported layout."""


class UnsupportedCodecError(TiffFormatError):
    """A tile uses a compression or predictor aefsql does not decode."""


class RangeReadError(AefsqlError):
    """A byte-range read failed or returned other bytes than were asked for."""


class Cancelled(AefsqlError):
    """The query was cancelled (Ctrl-C in the shell) while aefsql was reading."""
