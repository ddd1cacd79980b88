"""Coverage-guided fuzzing of the block decoders with atheris (outside CI).

    pip install atheris
    python fuzz/fuzz_codecs.py -atheris_runs=10000000 -rss_limit_mb=1024 fuzz/corpus/codecs

An input is 6 parameter bytes (codec, predictor and dtype, rows, cols, samples, rows needed)
and the block's bytes. Seeds are real blocks in every codec aefsql decodes (none, LZW,
DEFLATE, Adobe DEFLATE, ZSTD; predictors 1 and 2): written by aefsql's encoder, by the codec
libraries and by GDAL. Any input must give a block of the shape asked for, no larger than
the block, or a TiffFormatError: anything else (another exception, a hang, a crash, memory
beyond the limit) is a finding.
"""

import io
import sys
import zlib
from pathlib import Path

import atheris
import imagecodecs
import numpy as np
import zstandard

from aefsql import codecs
from aefsql.codecs import ADOBE_DEFLATE, DEFLATE, LZW, NONE, ZSTD, decode_block
from aefsql.errors import TiffFormatError
from aefsql.writer import COMPRESSION_CODES, _compress

# The decoders' scalar logic only: atheris' comparison hooks leak the result of comparing
# arrays (a copy of the array per ==), which the LZW check's bulk reads do by the thousand.
for _name in ("check_supported", "decode_block", "_decompress", "_read_fully"):
    atheris.instrument_func(getattr(codecs, _name))

CODECS = [NONE, LZW, DEFLATE, ADOBE_DEFLATE, ZSTD]
DTYPES = [
    np.dtype(order + kind)
    for kind in ("i1", "u1", "i2", "u2", "i4", "f4", "i8", "f8")
    for order in "<>"
]
MAX_ROWS, MAX_COLS, MAX_SAMPLES = 64, 64, 8

# The C decoders (zlib, zstd, imagecodecs) are not instrumented either: libFuzzer sees few
# edges. One instrumented no-op per outcome class (codec, predictor, result, log2 of the
# stream's length) makes each class a feature, so real streams stay in the corpus.
OUTCOMES = ("ok", "short", "corrupt")
_MARKS = [
    atheris.instrument_func(eval("lambda: None"))  # noqa: S307 - a fresh code object each
    for _ in range(len(CODECS) * 2 * len(OUTCOMES) * 14)
]


def _mark(codec: int, predictor: int, outcome: str, length: int) -> None:
    key = (CODECS.index(codec) * 2 + predictor - 1) * len(OUTCOMES) + OUTCOMES.index(outcome)
    _MARKS[key * 14 + min(length.bit_length(), 13)]()


def params(
    codec: int,
    predictor: int,
    dtype: np.dtype,
    rows: int,
    cols: int,
    samples: int,
    rows_needed: int | None = None,
) -> bytes:
    """The 6 parameter bytes test_one_input reads back."""
    return bytes(
        [
            CODECS.index(codec),
            (DTYPES.index(dtype) << 1) | (predictor - 1),
            rows - 1,
            cols - 1,
            samples - 1,
            rows_needed or 0,
        ]
    )


def _differenced(block: np.ndarray) -> np.ndarray:
    """The encoder's side of predictor 2 (integer subtraction wraps)."""
    return np.concatenate([block[:, :1], np.diff(block, axis=1)], axis=1).astype(block.dtype)


def _gdal_blocks() -> list[bytes]:
    """GDAL-written 16x16 single-band int8 blocks (its ZSTD frames omit the content size)."""
    try:
        import rasterio
        import tifffile
    except ImportError:
        return []
    data = np.random.default_rng(4).integers(-20, 20, (1, 32, 32), dtype=np.int8).cumsum(axis=2)
    seeds = []
    for name, codec in (("zstd", ZSTD), ("deflate", DEFLATE), ("lzw", LZW), ("none", NONE)):
        for predictor in (1, 2):
            profile = dict(
                driver="GTiff",
                width=32,
                height=32,
                count=1,
                dtype="int8",
                tiled=True,
                blockxsize=16,
                blockysize=16,
                compress=name,
                transform=rasterio.transform.from_origin(0, 32, 1, 1),
            )
            if name != "none":
                profile["predictor"] = predictor
            elif predictor == 2:
                continue
            with rasterio.MemoryFile() as memory:
                with memory.open(**profile) as out:
                    out.write(data.astype(np.int8))
                raw = memory.read()
            with tifffile.TiffFile(io.BytesIO(raw)) as tif:
                page = tif.pages[0]
                offset, count = page.dataoffsets[0], page.databytecounts[0]
            seeds.append(
                params(codec, predictor, DTYPES[0], 16, 16, 1) + raw[offset : offset + count]
            )
    return seeds


def seeds() -> list[bytes]:
    rng = np.random.default_rng(3)
    smooth = np.repeat(np.arange(16, dtype=np.int8), 24 * 4).reshape(16, 24, 4)
    noisy = rng.integers(-128, 128, (16, 24, 4), dtype=np.int8)
    out = []
    # aefsql's own encoder (ZSTD and DEFLATE, int8, predictors 1 and 2).
    for name, code in COMPRESSION_CODES.items():
        for predictor in (1, 2):
            for block in (smooth, noisy):
                out.append(
                    params(code, predictor, DTYPES[0], 16, 24, 4, 8)
                    + _compress(block, name, predictor)
                )
    # The libraries, over every codec and a few sample types and byte orders.
    encoders = {
        NONE: lambda raw: raw,
        LZW: imagecodecs.lzw_encode,
        DEFLATE: zlib.compress,
        ADOBE_DEFLATE: lambda raw: zlib.compress(raw, 9),
        ZSTD: lambda raw: zstandard.ZstdCompressor(write_content_size=False).compress(raw),
    }
    for dtype in (np.dtype("<u2"), np.dtype(">i2"), np.dtype("<f4"), np.dtype(">f8")):
        block = (np.arange(8 * 12 * 2).reshape(8, 12, 2) % 50).astype(dtype)
        for codec, encode in encoders.items():
            for predictor in (1, 2):
                raw = (_differenced(block) if predictor == 2 else block).tobytes()
                out.append(params(codec, predictor, dtype, 8, 12, 2) + encode(raw))
    return out + _gdal_blocks()


def test_one_input(raw: bytes) -> None:
    if len(raw) < 6:
        return
    codec = CODECS[raw[0] % len(CODECS)]
    predictor = 1 + (raw[1] & 1)
    dtype = DTYPES[(raw[1] >> 1) % len(DTYPES)]
    rows, cols, samples = 1 + raw[2] % MAX_ROWS, 1 + raw[3] % MAX_COLS, 1 + raw[4] % MAX_SAMPLES
    rows_needed = raw[5] or None  # above rows: all rows
    try:
        block = decode_block(
            raw[6:],
            compression=codec,
            predictor=predictor,
            rows=rows,
            cols=cols,
            samples=samples,
            dtype=dtype,
            rows_needed=rows_needed,
        )
    except TiffFormatError as exc:
        _mark(codec, predictor, "short" if "expected" in str(exc) else "corrupt", len(raw) - 6)
        return
    _mark(codec, predictor, "ok", len(raw) - 6)
    shape = (min(rows_needed or rows, rows), cols, samples)
    if block.shape != shape or block.dtype != dtype.newbyteorder("="):
        raise AssertionError(f"decoded {block.shape} {block.dtype}, asked {shape} {dtype}")
    if block.nbytes > rows * cols * samples * dtype.itemsize:
        raise AssertionError(f"decoded {block.nbytes} bytes: more than the block")


if __name__ == "__main__":
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus and not Path(corpus[0]).is_file():  # a file: rerun one input
        folder = Path(corpus[0])
        folder.mkdir(parents=True, exist_ok=True)
        for k, seed in enumerate(seeds()):
            (folder / f"seed{k}.bin").write_bytes(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
