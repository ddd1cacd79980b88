"""aef_pixels' plan (Session.area_chunks' result) for N chunks: time and VmHWM, one process.

    PYTHONPATH=$PWD python benchmarks/bench_plan_memory.py new|old N

`old` builds it as before (a Python dict a chunk, then pa.array); `new` is duck._chunk_arrow
(Arrow columns from numpy). Run each in a fresh process so VmHWM is its own.
"""

import sys
import time

import numpy as np
import pyarrow as pa

from aefsql.pixels import Chunks
from aefsql.duck import _chunk_arrow, CHUNK_ARROW
n = int(sys.argv[2]); mode = sys.argv[1]
c = Chunks(np.full(n, "https://storage.googleapis.com/alphaearth/2024/33N/x-0000000000-0000000000.tiff", object),
           np.full(n, 2024), np.arange(n) // 16, (np.arange(n) % 16) * 512, (np.arange(n) % 16 + 1) * 512, np.zeros(n, bool))
order = np.arange(n)
t = time.perf_counter()
if mode == "new":
    a = _chunk_arrow(c, order)
else:
    found = [{"path": p, "year": y, "row": r, "col0": a, "col1": b, "centroid": x} for p, y, r, a, b, x in zip(c.path.tolist(), c.year.tolist(), c.row.tolist(), c.col0.tolist(), c.col1.tolist(), c.centroid.tolist())]
    a = pa.array([[found[k] for k in order.tolist()]], type=pa.list_(CHUNK_ARROW))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(mode, n, f"{time.perf_counter()-t:.1f} s", f"VmHWM {int(hwm)//1024} MiB")
