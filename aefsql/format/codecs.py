"""Pure block decoding: compressed TIFF block bytes -> numpy array."""

from __future__ import annotations

import zlib

import numpy as np
import zstandard

from ..errors import TiffFormatError, UnsupportedCodecError

NONE = 1
LZW = 5
DEFLATE = 8
ADOBE_DEFLATE = 32946
ZSTD = 50000

CODEC_NAMES = {
    1: "none",
    2: "CCITT RLE",
    3: "CCITT fax3",
    4: "CCITT fax4",
    5: "LZW",
    6: "old-style JPEG",
    7: "JPEG",
    8: "DEFLATE",
    32773: "PackBits",
    32946: "DEFLATE",
    34887: "LERC",
    34925: "LZMA",
    50000: "ZSTD",
    50001: "WebP",
    50002: "JPEG XL",
}


def codec_name(compression: int) -> str:
    return CODEC_NAMES.get(compression, f"unknown ({compression})")


def check_supported(compression: int, predictor: int) -> None:
    """Raise `UnsupportedCodecError` before any block is fetched that could not be decoded."""
    if compression not in (NONE, LZW, DEFLATE, ADOBE_DEFLATE, ZSTD):
        raise UnsupportedCodecError(
            f"compression {codec_name(compression)} is not supported "
            "(aefsql decodes ZSTD, DEFLATE, LZW and uncompressed tiles)"
        )
    if compression == LZW:
        _lzw_decoder()
    if predictor not in (1, 2):
        raise UnsupportedCodecError(
            f"predictor {predictor} is not supported (aefsql undoes predictors 1 and 2)"
        )


def decode_block(
    raw: bytes,
    *,
    compression: int,
    predictor: int,
    rows: int,
    cols: int,
    samples: int,
    dtype: np.dtype,
    rows_needed: int | None = None,
) -> np.ndarray:
    """Decode the first `rows_needed` rows (default all) of a block of shape
    (rows, cols, samples) into native byte order.

    Decompression stops once those rows are out: a point near the top of a 1024-row block costs
    a fraction of the whole inflate. `dtype` carries the file's byte order. Raises
    `TiffFormatError` on a corrupt stream.
    """
    check_supported(compression, predictor)
    rows_needed = rows if rows_needed is None else min(rows_needed, rows)
    expected = rows_needed * cols * samples * dtype.itemsize
    data = _decompress(raw, compression, expected)
    if len(data) < expected:
        raise ShortBlock(len(data), expected)
    count = rows_needed * cols * samples
    block = np.frombuffer(data, dtype=dtype, count=count).reshape(rows_needed, cols, samples)
    block = block.astype(dtype.newbyteorder("="), copy=False)
    if predictor == 2:
        # Horizontal differencing: each sample is stored as the difference to its left
        # neighbour; integer overflow wraps, exactly as the encoder's subtraction did.
        block = np.cumsum(block, axis=1, dtype=block.dtype)
    return block


class ShortBlock(TiffFormatError):
    """A block's bytes decode to fewer bytes than asked for: corrupt, or only a prefix."""

    def __init__(self, decoded: int, expected: int):
        self.decoded = decoded
        super().__init__(
            f"block decodes to {decoded} bytes, expected {expected}: corrupt or truncated"
        )


# -- prefix reads ------------------------------------------------------------------------
# A block decodes from its start, so the rows a point needs come out of a prefix of its
# compressed bytes. Its length is estimated from the block's own compression ratio (its byte
# count against its decoded size), rounded up to what the codec can decode alone, with some
# slack; a prefix that turns out short is extended from what it revealed.

PREFIX_CODECS = (NONE, ZSTD, DEFLATE, ADOBE_DEFLATE)  # LZW blocks are read whole
ZSTD_BLOCK = 128 * 1024  # a zstd block holds at most this much, and decodes only whole
PREFIX_SLACK = 1.03  # zstd blocks of AEF-like data vary by ~5% around their share
DEFLATE_MARGIN = 1024  # the symbol under way at the end of a deflate prefix
MIN_EXTENSION = 4096  # a second request is worth at least this much
ZSTD_WALK_LIMIT = 4096  # block headers read at most (a 1024² int8 block has 8): bounded work


def prefix_length(
    size: int, compression: int, length: int, total: int, have: bytes = b"", got: int = 0
) -> int:
    """How many leading bytes of a block of `size` compressed bytes (`total` decoded) to have
    so that its first `length` decoded bytes come out. `have`: a prefix already at hand, which
    decoded to `got` bytes only: the rest is estimated at the dearer of the block's ratio and
    the prefix's. Always more than len(have) (until `size`)."""
    if compression not in PREFIX_CODECS or length >= total or total <= 0:
        return size
    if compression == NONE:
        return min(size, length)  # never past the block's own bytes
    ratio = size / total
    if compression == ZSTD:
        complete, next_end = _zstd_walk(have)
        if got:
            ratio = max(ratio, complete / got)
        missing, start = length - got, max(complete, 18)  # a frame header: at most 18 bytes
        if next_end is not None:  # the block under way is known: up to its end, then on
            missing, start = missing - ZSTD_BLOCK, next_end
        blocks = -(-max(missing, 0) // ZSTD_BLOCK)  # only whole zstd blocks decode
        want = start + int(blocks * ZSTD_BLOCK * ratio * PREFIX_SLACK) + 3 * blocks
    else:  # inflate gives output as it goes: the rest in proportion
        if got:
            ratio = max(ratio, len(have) / got)
        want = len(have) + int((length - got) * ratio * PREFIX_SLACK) + DEFLATE_MARGIN
    if have:
        want = max(want, len(have) + MIN_EXTENSION)
    return min(size, want)


def _zstd_walk(raw: bytes) -> tuple[int, int | None]:
    """(end of the last complete zstd block in `raw`, end of the block after it or None when
    its header is not in `raw`) of a single-frame stream; (0, None) when `raw` is empty or
    not one."""
    if len(raw) < 6 or raw[:4] != b"\x28\xb5\x2f\xfd":
        return 0, None
    descriptor = raw[4]
    single = descriptor >> 5 & 1
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
    at += ((1 if single else 0), 2, 4, 8)[descriptor >> 6]
    complete = at
    for _ in range(ZSTD_WALK_LIMIT):  # a hostile stream of empty blocks ends the walk early
        if at + 3 > len(raw):
            break
        header = int.from_bytes(raw[at : at + 3], "little")
        kind, size = header >> 1 & 3, header >> 3
        end = at + 3 + (1 if kind == 1 else size)  # an RLE block holds one byte
        if end > len(raw):
            return complete, end
        complete = at = end
        if header & 1:  # the last block
            break
    return complete, None


def _decompress(raw: bytes, compression: int, length: int) -> bytes:
    """At least the first `length` bytes of the decompressed stream (all when shorter)."""
    try:
        if compression == ZSTD:
            # A stream reader stops early; GDAL's frames do not always record their size.
            with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
                return _read_fully(reader, length)
        if compression in (DEFLATE, ADOBE_DEFLATE):
            return zlib.decompressobj().decompress(raw, length)
        if compression == LZW:
            _check_lzw(raw, length)
            # Into a buffer of the size asked for: the decoder stops there, so a small
            # stream that would inflate to gigabytes costs no more than the block holds.
            return bytes(_lzw_decoder()(raw, out=bytearray(length)))
        if compression == NONE:
            return raw
    except (zstandard.ZstdError, zlib.error, ValueError, RuntimeError) as exc:
        raise TiffFormatError(f"{codec_name(compression)} stream is corrupt: {exc}") from None
    raise UnsupportedCodecError(f"compression {codec_name(compression)} is not supported")


def _read_fully(reader, length: int) -> bytes:
    parts, have = [], 0
    while have < length:
        part = reader.read(length - have)
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


# imagecodecs' LZW decoder (2026.3.6, the newest as of this writing) trusts the code after a
# Clear to be a literal: any other code makes it read a table entry it has not written in this
# call, uninitialised memory (a segfault, or bytes from anywhere in the process).
# _check_lzw reads the codes as it does: 9 to 12 bits, MSB-first widening one code early
# (TIFF) or LSB-first (old-style), at most 5120 - 258 codes between Clears.
_CLEAR, _EOI = 256, 257


def _lzw_layout(early: bool) -> tuple[np.ndarray, np.ndarray]:
    """(widths, bit offsets) of the codes of a run that starts after a Clear."""
    size = 257 + np.arange(5120 - 256)  # the table's size as each code is read
    widths = 9 + sum((size >= edge - early).astype(np.int64) for edge in (512, 1024, 2048))
    return widths, np.concatenate(([0], np.cumsum(widths)[:-1]))


_LZW_MSB, _LZW_LSB = _lzw_layout(True), _lzw_layout(False)


def _check_lzw(raw: bytes, length: int) -> None:
    """Raise ValueError if a code after a Clear is not a literal, a Clear or the End, among
    the codes read before `length` bytes are out (every code but a Clear gives one or more).

    Codes are read in bulk: runs too short to reach 10-bit codes (a hostile stream's, or a
    flood of Clears) lie on one grid of 9-bit codes, read a window at a time; a longer run is
    read alone."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if data.size < 2 or length <= 0:
        return
    lsb = bool(data[0] == 0 and data[1] & 1)
    if not lsb and (data[0] != 128 or data[1] & 128):
        return  # no leading Clear: the decoder refuses the stream
    widths, offsets = _LZW_LSB if lsb else _LZW_MSB
    short = int(np.argmax(widths > 9))  # a run's first code read wider
    start, left, window = 9, length, 512  # the bit of a run's first code; outputs to come
    while True:
        k = np.arange(min(window, (8 * data.size - start) // 9 + 1))  # the last: past the end
        codes = _lzw_codes(data, start + 9 * k, 9, lsb)
        clear = codes == _CLEAR
        last = np.maximum.accumulate(np.where(clear, k, -1))  # the last Clear up to each code
        j = k - np.concatenate(([-1], last[:-1])) - 1  # each code's index in its run
        done = np.cumsum(~clear)  # the codes that give output, up to each
        bad = (j == 0) & (codes > _EOI)
        end = ~clear & ((codes == _EOI) | ((j > 0) & (codes > 257 + j)))
        events = np.flatnonzero(bad | end | (j == short))
        full = int(np.searchsorted(done, left))  # the code that fills the block
        if events.size == 0 and full >= k.size:  # on to the run under way at the window's end
            run = int(last[-1]) + 1
            left -= int(done[run - 1]) if run else 0
            start, window = start + 9 * run, min(2 * window, 1 << 15)
            continue
        event = int(events[0]) if events.size else k.size
        if full < event or end[event] and j[event] != short:
            return  # the block is full, the stream ends or the decoder refuses it
        if bad[event]:
            raise ValueError(f"code {codes[event]} follows a Clear code")
        run = event - short  # a longer run starts there
        left -= int(done[run - 1]) if run else 0
        start += 9 * run
        codes = _lzw_codes(data, start + offsets, widths, lsb)
        stop = _lzw_stop(codes)
        if stop >= left or codes[stop] != _CLEAR:
            return
        left -= stop
        start, window = start + int(offsets[stop] + widths[stop]), 512


def _lzw_codes(data: np.ndarray, where: np.ndarray, width: np.ndarray, lsb: bool) -> np.ndarray:
    """The codes of `width` bits at bit offsets `where`, read as imagecodecs reads them (a
    third byte only while 24 bits are left); End past the stream's end."""
    end, last = 8 * data.size, data.size - 1
    at = where >> 3

    def byte(k):
        return data[np.minimum(at + k, last)].astype(np.int64)

    third = np.where(where + 24 <= end, byte(2), 0)
    if lsb:
        value = (byte(0) | byte(1) << 8 | third << 16) >> (where & 7)
    else:
        value = (byte(0) << 16 | byte(1) << 8 | third) >> (24 - (where & 7) - width)
    return np.where(where + width <= end, value & ((1 << width) - 1), _EOI)


def _lzw_stop(codes: np.ndarray) -> int:
    """The index of the first code after the first that ends the run: a Clear, the End, a
    code beyond the table (corrupt), or any code once the table is full."""
    j = np.arange(1, codes.size)
    later = codes[1:]
    ends = (later == _CLEAR) | (later == _EOI) | (later > 257 + j) | (j == 5120 - 257)
    return int(np.argmax(ends)) + 1


def _lzw_decoder():
    try:
        from imagecodecs import lzw_decode
    except ImportError:
        raise UnsupportedCodecError(
            "LZW-compressed tiles need the optional imagecodecs package: pip install 'aefsql[lzw]'"
        ) from None
    return lzw_decode
