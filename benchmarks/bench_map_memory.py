"""Peak memory of writing a map COG (`aefsql.writer.write_map_cog`): a 8192² float32 map of
noise (256 MiB of values, which compress little: the file is ~312 MiB), NaN in 100 rows.

    python benchmarks/bench_map_memory.py [folder holding the aefsql package to measure]

Prints the process's peak RSS against the map's own size; run it once per tree to compare
two versions of the writer (a fresh process each: peak RSS only grows)."""

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])
from aefsql.writer import write_map_cog  # noqa: E402

data = np.random.default_rng(0).standard_normal((1, 8192, 8192), dtype=np.float32)
data[0, :100] = np.nan
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "map.tif"
    start = time.perf_counter()
    write_map_cog(path, data, epsg=32633, transform=(10, 0, 5e5, 0, -10, 4e6), nodata=np.nan)
    seconds = time.perf_counter() - start
    size = path.stat().st_size >> 20
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
print(
    f"map {data.nbytes >> 20} MiB, file {size} MiB: peak RSS {peak} MiB "
    f"({before} MiB before writing), {seconds:.1f} s"
)
