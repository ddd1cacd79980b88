"""Coverage-guided fuzzing of the TIFF header parser with atheris (outside CI).

    pip install atheris
    python fuzz/fuzz_tiff.py -atheris_runs=200000 fuzz/corpus

Seeds are aefsql-written AEF COG headers (TIFF and BigTIFF). Any input must give a parsed
header or a TiffFormatError: anything else (another exception, a hang, a crash) is a finding.
"""

import sys

import atheris

with atheris.instrument_imports():
    from aefsql.errors import TiffFormatError
    from aefsql.tiff import SparseBytes, parse_header

import numpy as np

from aefsql.writer import encode_aef_cog


def seeds() -> list[bytes]:
    data = np.random.default_rng(3).integers(-127, 128, (8, 40, 48), dtype=np.int8)
    return [
        encode_aef_cog(
            data, epsg=32633, transform=(10, 0, 5e5, 0, 10, 4e6), block_size=16, bigtiff=bigtiff
        )[:4096]
        for bigtiff in (False, True)
    ]


def test_one_input(raw: bytes) -> None:
    data = SparseBytes(file_size=len(raw))
    data.add(0, raw)
    try:
        parse_header(data)
    except TiffFormatError:
        pass


if __name__ == "__main__":
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus:
        from pathlib import Path

        folder = Path(corpus[0])
        folder.mkdir(parents=True, exist_ok=True)
        for k, seed in enumerate(seeds()):
            (folder / f"seed{k}.tif").write_bytes(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
