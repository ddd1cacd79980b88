"""The exceptions aefsql raises: one base class, a few specific kinds."""

import os
import re
import sys
from urllib.parse import urlsplit, urlunsplit

# A URL inside a message: a scheme, "://", and everything up to a space, a quote or a
# parenthesis (messages put URLs in those).
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()]+")


def redact(url: str) -> str:
    """The URL without credentials, path parameters (`;jsessionid=…`), query string or
    fragment (signed URLs carry secrets there): what error messages show."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL after all: keep nothing that could be a secret
        return url.split("?")[0].split(";")[0]
    if not parts.scheme or parts.scheme == "file":
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    path = re.sub(r";[^/]*", "", parts.path)
    return urlunsplit((parts.scheme, host, path, "", ""))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (messages of DuckDB, fsspec or servers quote the
    URLs they failed on, secrets included)."""
    return _URL_IN_TEXT.sub(lambda match: redact(match.group(0)), text)


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


def user_stacklevel() -> int:
    """The `stacklevel` that makes a `warnings.warn`, given by the function calling this,
    name the first frame outside aefsql: the user's call, however deep in aefsql (and through
    whichever decorators) the warning is given."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
