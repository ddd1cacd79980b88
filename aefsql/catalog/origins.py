"""Where a catalog's tile paths may point: the origin policy for untrusted catalogs.

A catalog is untrusted input: whoever wrote it chooses the URLs aefsql then reads with the
user's credentials and from the user's network. So, as a browser does with a page's
links, a remote catalog may name tiles only on its own origin (scheme, host, port; for s3
and gs, the bucket) or on hosts the user allows; a local catalog (written by the user) may
name anything. Whatever the catalog, cloud metadata and link-local addresses hand out the
machine's credentials and are never named; and no catalog may point further into the
user's network than its own host is (see AddressSpace). Host names are checked as written,
not resolved: a public name that resolves to a private address is the network's to refuse.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from ..errors import CatalogError, redact

URL_WITH_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

ALLOWED_SCHEMES = {"s3", "s3a", "gs", "gcs", "http", "https", "file"}


def check_path(path: str | None) -> None:
    """A tile path must be a URL of a known scheme, or relative without leaving the folder.
    (The caller's CatalogError names the catalog and the row.)"""
    if path is None or not path.strip():
        raise CatalogError("empty path")
    scheme = URL_WITH_SCHEME.match(path)
    if scheme and scheme.group(0)[:-3].lower() not in ALLOWED_SCHEMES:
        raise CatalogError(
            f"path {redact(path)} has an unexpected scheme; allowed: "
            + ", ".join(sorted(ALLOWED_SCHEMES))
        )
    if not scheme and ".." in path.replace("\\", "/").split("/"):
        raise CatalogError(f"path {path!r} escapes the catalog's folder")


# Hosts that answer with a cloud machine's credentials (AWS, GCP, Azure, Alibaba, AWS over
# IPv6): the tile of no catalog, allowed or not.
METADATA_HOSTS = frozenset(
    {
        "169.254.169.254",
        "metadata.google.internal",
        "metadata",
        "instance-data",
        "fd00:ec2::254",
        "100.100.100.200",
    }
)
# Schemes that name the same storage: s3a is s3 read by Hadoop's connector, gcs is gs.
_SAME_STORAGE = {"s3a": "s3", "gcs": "gs"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)")
# Host names as DNS and the storage services spell them; nothing a URL parser could read
# otherwise (percent escapes, non-ASCII letters that normalize to ASCII ones, backslashes).
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_IPV4_PART = re.compile(r"0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*")


class AddressSpace(IntEnum):
    """How far into the user's network an address reaches, inmost first."""

    LOOPBACK = 0  # this machine
    PRIVATE = 1  # the local network, a cloud VPC
    PUBLIC = 2


@dataclass(frozen=True)
class Origin:
    """Where a URL's bytes come from: scheme, canonical host (the bucket for s3 and gs) and
    port; scheme 'file' and no host for local paths."""

    scheme: str
    host: str = ""
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port is None or self.port == _DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{host}" + ("" if default else f":{self.port}")

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def is_web(self) -> bool:
        """Reached by host name or address (http, https), not by bucket name."""
        return self.scheme in _DEFAULT_PORTS


def check_origin(path: str, catalog_url: str, allowed_hosts: Iterable[str] | None = None) -> None:
    """CatalogError saying why the catalog at `catalog_url` may not name the tile at `path`
    (an absolute path or URL), and whether `allowed_hosts` can allow it; nothing when it may."""
    refusal = origin_refusal(origin_of(path), origin_of(catalog_url), allowed_hosts)
    if refusal is not None:
        raise CatalogError(f"tile {redact(path)} {refusal}")


_NOT_ALLOWABLE = "(allowed_hosts= cannot allow it; a local copy of the catalog can)"


def origin_refusal(
    tile: Origin, catalog: Origin, allowed_hosts: Iterable[str] | None
) -> str | None:
    """Why a catalog of origin `catalog` may not name a tile of origin `tile`; None when it
    may. The policy, rule by rule (see the notes above METADATA_HOSTS)."""
    if tile.is_local:
        return (
            None
            if catalog.is_local
            else f"is a local file, which a remote catalog may not name {_NOT_ALLOWABLE}"
        )
    if tile.is_web and is_metadata_host(tile.host):
        return (
            "is on a cloud metadata or link-local address, which no catalog may name, "
            "whatever allowed_hosts= says"
        )
    if catalog.is_local:
        return None
    space = address_space(tile.host) if tile.is_web else AddressSpace.PUBLIC
    if space < address_space_of(catalog):
        return (
            f"is on a {space.name.lower()} address, further into this machine's network than "
            f"the catalog's own host {catalog.host} {_NOT_ALLOWABLE}"
        )
    if tile == catalog or tile.host in allowed_host_keys(allowed_hosts):
        return None
    kind = "host" if tile.is_web else "bucket"
    return (
        f"is not on the catalog's own origin ({catalog}); pass "
        f"allowed_hosts=[{tile.host!r}] to let the catalog name tiles on that {kind}"
    )


def origin_of(url: str) -> Origin:
    """The origin of a path or URL; CatalogError when its host is not plainly written (a
    host two URL parsers could read differently cannot be checked)."""
    match = _AUTHORITY.match(url)
    if match is None:  # no scheme: a local path
        return Origin("file")
    scheme = match.group(1).lower()
    scheme = _SAME_STORAGE.get(scheme, scheme)
    if scheme in ("file", "local"):
        return Origin("file")
    return _remote_origin(scheme, match.group(2))


@lru_cache(maxsize=256)  # the rows of a catalog share a few hosts
def _remote_origin(scheme: str, authority: str) -> Origin:
    # What follows the last @ (credentials precede it), as every URL parser reads it; shown
    # quoted, as it may hold control characters.
    host_port = authority.rpartition("@")[2]
    malformed = CatalogError(f"tile URL host {host_port!r} ({scheme}) is not a well-formed host")
    if any(c <= " " or c in "\\\x7f" or not c.isascii() for c in authority):
        raise malformed
    if scheme not in _DEFAULT_PORTS:  # a bucket: the authority is its name, nothing else
        bucket = bucket_name(authority)
        if bucket is None:
            raise malformed
        return Origin(scheme, bucket)
    if host_port.startswith("["):  # an IPv6 literal
        host, _, port = host_port[1:].partition("]")
        if port and not port.startswith(":"):
            raise malformed
        port = port[1:]
    else:
        host, _, port = host_port.partition(":")
    if port and not (port.isdigit() and int(port) <= 65535):
        raise malformed
    canonical = canonical_host(host)
    if canonical is None:
        raise malformed
    return Origin(scheme, canonical, int(port) if port else _DEFAULT_PORTS[scheme])


# IPv6 addresses that carry an IPv4 one a gateway connects to (RFC 6052, NAT64).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def canonical_host(host: str) -> str | None:
    """The host as it is compared and classified, None when it is not a host: lower case,
    no trailing dot, no brackets, IP addresses in their standard spelling (a resolver reads
    127.1, 0x7f000001 and 2130706433 all as 127.0.0.1; ::ffff:a.b.c.d and 64:ff9b::a.b.c.d
    reach a.b.c.d)."""
    host = host.lower().removeprefix("[").removesuffix("]").removesuffix(".")
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return None
        if address in _NAT64:
            return str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return str(address.ipv4_mapped or address)
    if not _HOST_NAME.fullmatch(host):
        return None
    labels = host.split(".")
    if not _IPV4_PART.fullmatch(labels[-1]):
        return host  # a name: its last label is not a number
    numbers = _ipv4_numbers(labels)
    return None if numbers is None else str(ipaddress.IPv4Address(numbers))


def bucket_name(name: str) -> str | None:
    """An s3 or gs bucket's name as compared (lower case), None when it is not one. Not a
    host: data.2024 is a bucket name, not an address."""
    name = name.lower()
    return name if _HOST_NAME.fullmatch(name) else None


def _ipv4_numbers(labels: list[str]) -> int | None:
    """The address that 1 to 4 numbers (decimal, 0x hex, 0 octal) spell, the last filling the
    remaining bytes as inet_aton reads them; None when they spell none."""
    if len(labels) > 4 or not all(_IPV4_PART.fullmatch(label) for label in labels):
        return None
    numbers = [
        int(label[2:] or "0", 16)
        if label.startswith("0x")
        else int(label, 8 if label[0] == "0" else 10)
        for label in labels
    ]
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return value


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_metadata_host(host: str) -> bool:
    """True for a cloud metadata host or a link-local address (canonical host)."""
    address = _ip(host)
    return host in METADATA_HOSTS or (address is not None and address.is_link_local)


def address_space(host: str) -> AddressSpace:
    """The address space of a canonical web host. A name other than localhost counts as
    public: it is not resolved here."""
    if host == "localhost" or host.endswith(".localhost"):
        return AddressSpace.LOOPBACK
    address = _ip(host)
    if address is None:
        return AddressSpace.PUBLIC
    # 0.0.0.0 and :: reach this machine when connected to.
    if address.is_loopback or address.is_unspecified:
        return AddressSpace.LOOPBACK
    return AddressSpace.PUBLIC if address.is_global else AddressSpace.PRIVATE


def address_space_of(catalog: Origin) -> AddressSpace:
    """A catalog in a bucket counts as public: its bucket name is no address."""
    return address_space(catalog.host) if catalog.is_web else AddressSpace.PUBLIC


def allowed_host_keys(allowed_hosts: Iterable[str] | None) -> frozenset[str]:
    """The canonical hosts of an allow-list; CatalogError for an entry that is no host name
    (a URL, a host:port)."""
    if allowed_hosts is None:
        return frozenset()
    if isinstance(allowed_hosts, str):
        raise CatalogError(
            f"allowed_hosts is a list of host names, such as [{allowed_hosts!r}], not a string"
        )
    keys = set()
    for entry in allowed_hosts:
        key = (canonical_host(entry) or bucket_name(entry)) if isinstance(entry, str) else None
        if key is None:
            raise CatalogError(
                f"allowed_hosts: {entry!r} is not a host name such as 'data.example.com' or a "
                "bucket name (no scheme, port or path)"
            )
        keys.add(key)
    return frozenset(keys)
