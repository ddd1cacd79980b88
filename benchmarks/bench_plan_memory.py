"""aef_pixels' plan (area_chunks' result) for N chunks: time and VmHWM, one process.

    PYTHONPATH=$PWD python benchmarks/bench_plan_memory.py new|old N

`old` builds it as before (a Python dict a chunk, then pa.array); `new` is duck._chunk_arrow
(Arrow columns from numpy). Run each in a fresh process so VmHWM is its own.
"""

import sys
import time

import numpy as np
import pyarrow as pa

from aefsql.duck.types import CHUNK_ARROW
from aefsql.duck.udfs import _chunk_arrow
from aefsql.kernels.pixels import Chunks

URL = "https://storage.googleapis.com/alphaearth/2024/33N/x-0000000000-0000000000.tiff"


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    k = np.arange(n)
    chunks = Chunks(
        np.full(n, URL, object),
        np.full(n, 2024),
        k // 16,
        (k % 16) * 512,
        (k % 16 + 1) * 512,
        np.zeros(n, bool),
    )
    order = np.arange(n)
    start = time.perf_counter()
    if mode == "new":
        _chunk_arrow(chunks, order)
    else:
        columns = ("path", "year", "row", "col0", "col1", "centroid")
        found = [
            dict(zip(columns, values, strict=True))
            for values in zip(*(getattr(chunks, c).tolist() for c in columns), strict=True)
        ]
        pa.array([[found[i] for i in order.tolist()]], type=pa.list_(CHUNK_ARROW))
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM")).split()[1]
    print(mode, n, f"{seconds:.1f} s", f"VmHWM {int(hwm) // 1024} MiB")


if __name__ == "__main__":
    main()
