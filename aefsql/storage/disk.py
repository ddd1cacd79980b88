"""The disk cache, in the folder the user names: byte ranges, whole files and kept pixel
values, each entry one file in a hardened format (written atomically, verified on every
read, in folders only the user may write)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import stat
import struct
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AefsqlError, redact

# The disk cache: each entry is one file, written atomically (a private temporary, then a
# rename) and verified on every read:
#   MAGIC | header length (u32) | data length (u64) | header | digest (32 bytes) | data
# The header names what the entry holds (the URL's key, its version, the range) and the digest
# is BLAKE2b of all but itself, keyed with the folder's secret: a file that is not a whole entry
# of this URL, version and range, written by someone who can read the secret, is not served.
ENTRY_MAGIC = b"aefsql disk cache entry 1\n"
ENTRY_PREFIX = struct.Struct(">IQ")  # header length, data length
DIGEST_BYTES = 32
SECRET_NAME = "secret"  # in the cache folder, private, made on first use
SECRET_BYTES = 32
WHOLE_ENTRY_LIMIT = 2 * 1024**3  # as store.MAX_WHOLE_FILE_BYTES: no larger whole file is read
# A file's kept pixel values (see PixelValues): past this, a re-run decodes again.
VALUES_ENTRY_LIMIT = 256 * 1024**2
VALUES_PREFIX = struct.Struct(">QI")  # pixels, bands
# Files are opened without following a symbolic link or waiting on a FIFO planted there.
OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)
CHECKS_OWNERS = os.name == "posix"  # elsewhere modes and owners do not say who may write


def check_cache_folder(folder, st: os.stat_result, uid: int | None = None) -> None:
    """Refuse a cache folder that someone else could plant files in: one that is not a folder,
    belongs to another user or can be written by group or others. (`st`: the folder's stat;
    `uid`: the user's, default the effective one.)"""
    if not stat.S_ISDIR(st.st_mode):
        raise AefsqlError(f"cache folder {folder} is not a folder: give another cache_dir")
    if uid is None:
        uid = os.geteuid()
    if st.st_uid != uid:
        raise AefsqlError(
            f"cache folder {folder} belongs to another user (uid {st.st_uid}), who could change "
            "what it serves: give a cache_dir of your own"
        )
    if st.st_mode & 0o022:
        raise AefsqlError(
            f"cache folder {folder} can be written by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}): run `chmod 700 {folder}` or give another "
            "cache_dir"
        )


class DiskCache:
    """Byte ranges of remote files kept in a local folder, keyed by URL, version and range
    (local files are read in place, never copied here).

    A changed file has a new version (ETag, or size and modification time), so its old bytes
    are never served for it. Each entry carries its URL, version, range and a keyed digest,
    checked when read: one that does not verify (torn, altered, planted, another entry's) is a
    miss, and is deleted. Writes are atomic (write then rename): concurrent jobs sharing a
    folder see whole entries or none. What the cache creates is private (0700 folders, 0600
    files). A folder that cannot be written (full, read-only) stops the cache's writes with one
    warning: queries go on, reading what it does not hold from the network.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._off: str | None = None  # why writes stopped
        self._secret: bytes | None = None  # None: not made yet, or cannot be (then: no reads)
        self._opened = False
        # An unsafe folder is refused now; the folder and its secret are made on first use
        # (a connection reading local files only creates nothing).
        try:
            st = os.stat(self.folder)
        except OSError:  # missing, or out of reach: made or given up on first use
            st = None
        if CHECKS_OWNERS and st is not None:
            check_cache_folder(self.folder, st)

    def _ready(self) -> bytes | None:
        """The folder's secret, made with the folder on first use; None if they cannot be."""
        if self._secret is not None:
            return self._secret
        with self._lock:
            if self._opened:
                return self._secret
            self._opened = True
            try:
                self._secret = self._open()
                return self._secret
            except OSError as exc:
                failure = exc
        self._turn_off(failure)
        return None

    def _open(self) -> bytes:
        if not self.folder.exists():
            _make_private_dirs(self.folder)
        if CHECKS_OWNERS:
            check_cache_folder(self.folder, os.stat(self.folder))
        return self._load_secret()

    def _load_secret(self) -> bytes:
        """The folder's secret, made on first use (or when the one there is not private)."""
        path = self.folder / SECRET_NAME
        secret = _read_secret(path)
        if secret is None:
            # Exclusive when there is none: of two jobs starting together, the first one wins.
            exclusive = not os.path.lexists(path)
            _write_atomically(path, [os.urandom(SECRET_BYTES)], exclusive=exclusive)
            secret = _read_secret(path)
        if secret is None:
            raise PermissionError(f"its secret {path} cannot be made private")
        return secret

    def _path(self, url: str, version: str, start: int, end: int) -> Path:
        key = _key(url, version)
        return self.folder / key[:2] / key / f"{start}-{end}"

    def _whole_path(self, url: str, version: str) -> Path:
        return self._path(url, version, 0, 0).with_name("whole")

    def get(self, url: str, version: str, start: int, end: int) -> bytes | None:
        path = self._path(url, version, start, end)
        return self._read(path, _header(url, version, path.name), limit=end - start)

    def put(self, url: str, version: str, start: int, end: int, data) -> None:
        path = self._path(url, version, start, end)
        self._write(path, _header(url, version, path.name), data)

    def get_values(self, url: str, version: str, name: str, bands: int) -> PixelValues | None:
        """The pixel values an earlier job kept for this file version (entry `name`: one a
        level and band list), if any and whole."""
        path = self._path(url, version, 0, 0).with_name(name)
        data = self._read(path, _header(url, version, path.name), limit=VALUES_ENTRY_LIMIT)
        return None if data is None else PixelValues.decode(data, bands)

    def put_values(self, url: str, version: str, name: str, values: PixelValues) -> None:
        if values.nbytes <= VALUES_ENTRY_LIMIT:  # (told before encoding: a copy of it all)
            data = values.encode()
            path = self._path(url, version, 0, 0).with_name(name)
            self._write(path, _header(url, version, path.name), data)

    def get_whole(self, url: str, version: str) -> bytes | None:
        """The verified copy of a whole file (a catalog), if the cache holds one."""
        path = self._whole_path(url, version)
        return self._read(path, _header(url, version, path.name), limit=WHOLE_ENTRY_LIMIT)

    def put_whole(self, url: str, version: str, data) -> None:
        path = self._whole_path(url, version)
        self._write(path, _header(url, version, path.name), data)

    def _read(self, path: Path, header: bytes, limit: int) -> bytes | None:
        secret = self._ready()
        if secret is None or not self._own_folders(path):
            return None
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError:  # a link, unreadable…: not an entry of ours
            _drop(path)
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a device…: not an entry either
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as f:
            data = _verified(f, header, limit, secret)
        if data is None:
            _drop(path)
        return data

    def _write(self, path: Path, header: bytes, data) -> None:
        secret = self._ready()
        if self._off is not None or secret is None:
            return
        if not self._own_folders(path):
            return
        data = memoryview(data).cast("B")
        prefix = ENTRY_MAGIC + ENTRY_PREFIX.pack(len(header), data.nbytes) + header
        try:
            _make_private_dirs(path.parent)
            _write_atomically(path, [prefix, _digest(secret, prefix, data), data])
        except IsADirectoryError:  # a folder planted at the entry's name: this one is not kept
            return
        except OSError as exc:  # full, read-only, over quota…: degrade, never fail a query
            self._turn_off(exc)

    def _own_folders(self, path: Path) -> bool:
        """Whether the folders between the cache folder and the entry at `path` are folders
        (or not made yet), not links: O_NOFOLLOW guards only the entry's own name, and a link
        above it (in a cache copied from elsewhere) would take reads, deletes and writes out
        of the cache folder."""
        for folder in path.relative_to(self.folder).parents[:-1]:  # aa/<key>, then aa
            try:
                st = os.lstat(self.folder / folder)
            except FileNotFoundError:
                continue
            except OSError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                return False
        return True

    def _turn_off(self, exc: OSError) -> None:
        with self._lock:
            if self._off is not None:
                return
            self._off = exc.strerror or str(exc)
        warnings.warn(
            f"disk cache {self.folder} cannot be written ({self._off}): it keeps no more bytes "
            "for this connection, which reads them from the network; free space, fix the "
            "folder's permissions or give another cache_dir",
            UserWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class PixelValues:
    """Sampled values of one file version: `pixels` (row * width + col, sorted, distinct)
    and their `values` [pixels, bands] int8, nodata included. A re-run that finds every
    point's pixel here neither downloads nor decodes a block of that file."""

    pixels: np.ndarray
    values: np.ndarray

    def lookup(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, rows): which `pixels` it holds, and where (valid where found)."""
        if self.pixels.size == 0:
            return np.zeros(pixels.size, dtype=bool), np.zeros(pixels.size, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.pixels, pixels), self.pixels.size - 1)
        return self.pixels[at] == pixels, at

    def merged(self, pixels: np.ndarray, values: np.ndarray) -> PixelValues:
        """These values added (a pixel read again keeps its newest values)."""
        every = np.concatenate([pixels, self.pixels])
        rows = np.concatenate([values, self.values])
        kept, first = np.unique(every, return_index=True)  # the first: the new one
        return PixelValues(kept, rows[first])

    @property
    def nbytes(self) -> int:
        """The size of its encoding (`encode`)."""
        return _values_bytes(*self.values.shape)

    def encode(self) -> bytes:
        n, bands = self.values.shape
        return (
            VALUES_PREFIX.pack(n, bands)
            + self.pixels.astype(">i8").tobytes()
            + np.ascontiguousarray(self.values, dtype=np.int8).tobytes()
        )

    @staticmethod
    def decode(data: bytes, bands: int) -> PixelValues | None:
        """None unless `data` is an entry of `bands` bands, whole (sizes checked first)."""
        if len(data) < VALUES_PREFIX.size:
            return None
        n, stored = VALUES_PREFIX.unpack_from(data)
        if stored != bands or len(data) != _values_bytes(n, bands):
            return None
        start = VALUES_PREFIX.size
        pixels = np.frombuffer(data, ">i8", n, start).astype(np.int64)
        values = np.frombuffer(data, np.int8, n * bands, start + 8 * n).reshape(n, bands)
        if n > 1 and not (np.diff(pixels) > 0).all():
            return None
        return PixelValues(pixels, values)


def _values_bytes(pixels: int, bands: int) -> int:
    """The size of an encoded PixelValues: its prefix, then int64 pixels and int8 values."""
    return VALUES_PREFIX.size + pixels * (8 + bands)


def values_entry_name(level: int, bands: list[int]) -> str:
    """The entry of a level and band list: a job asking for other bands keeps its own."""
    digest = hashlib.sha256(",".join(map(str, bands)).encode()).hexdigest()[:16]
    return f"values-{int(level)}-{digest}"


def _key(url: str, version: str) -> str:
    return hashlib.sha256(f"{url}\0{version}".encode()).hexdigest()


def _header(url: str, version: str, entry: str) -> bytes:
    """What an entry must say it holds. The URL is bound through its key (a signed URL's query
    is a secret: only its redacted form is written, for whoever looks at the folder)."""
    fields = {"key": _key(url, version), "url": redact(url), "version": version, "entry": entry}
    return json.dumps(fields, sort_keys=True).encode()


def _digest(secret: bytes, prefix: bytes, data) -> bytes:
    mac = hashlib.blake2b(key=secret, digest_size=DIGEST_BYTES)
    mac.update(prefix)
    mac.update(data)
    return mac.digest()


def _verified(f, header: bytes, limit: int, secret: bytes) -> bytes | None:
    """The data of the entry open in `f` if it is a whole entry of `header`, at most `limit`
    bytes, with the right digest; else None. Sizes are checked before anything large is read."""
    fixed = len(ENTRY_MAGIC) + ENTRY_PREFIX.size
    st = os.fstat(f.fileno())
    start = f.read(fixed)
    if not stat.S_ISREG(st.st_mode) or len(start) != fixed or not start.startswith(ENTRY_MAGIC):
        return None
    header_size, data_size = ENTRY_PREFIX.unpack_from(start, len(ENTRY_MAGIC))
    if header_size != len(header) or data_size > limit:
        return None
    if (
        st.st_size != fixed + header_size + DIGEST_BYTES + data_size
        or f.read(header_size) != header
    ):
        return None
    digest = f.read(DIGEST_BYTES)
    data = f.read(data_size)
    if len(data) != data_size:
        return None
    expected = _digest(secret, start + header, data)
    return data if hmac.compare_digest(digest, expected) else None


def _read_secret(path: Path) -> bytes | None:
    """The secret at `path` if it is a private regular file of the right size, else None."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return None
    if not _is_private_file(os.fstat(fd)):  # (before fdopen: a folder there cannot be opened)
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        secret = f.read(SECRET_BYTES + 1)
    return secret if len(secret) == SECRET_BYTES else None


def _is_private_file(st: os.stat_result) -> bool:
    if not stat.S_ISREG(st.st_mode):
        return False
    return not CHECKS_OWNERS or (st.st_uid == os.geteuid() and not st.st_mode & 0o077)


def _make_private_dirs(folder: Path) -> None:
    """Create `folder` and its missing parents, each 0700 whatever the umask."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # another job made it meanwhile
            continue
        os.chmod(path, 0o700)  # the umask may have taken bits off


def _write_atomically(path: Path, chunks, exclusive: bool = False) -> None:
    """Write `chunks` to a private temporary beside `path`, then rename it to `path`
    (`exclusive`: keep a file already at `path`). The temporary is removed whatever fails."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o600)  # the umask may have taken the owner's bits off
            for chunk in chunks:
                f.write(chunk)
        if exclusive:
            _link(temporary, path)
        else:
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _link(source: str, path: Path) -> None:
    """`source` renamed to `path` unless a file is there already (then `source` is deleted)."""
    try:
        os.link(source, path)
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: the last writer wins
        os.replace(source, path)
        return
    os.unlink(source)


def _drop(path: Path) -> None:
    """Delete an entry that did not verify (if the folder lets us: else it stays ignored)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
