"""The polygon rasteriser (`aefsql.geometry.areas.row_spans`) against GDAL's (rasterio.features.
geometry_mask, all_touched off) on the same polygon, in the same run, each in a fresh child
process: wall time and peak memory (VmHWM, and the rise over the process's RSS once the
polygon is built).

The polygon is a county-like outline: `--vertices` vertices around a circle filling most of
an 8192 x 8192 tile of 10 m pixels (the published size), its radius jittered by 3 %, with a
hole and a second part. The spans are checked equal to GDAL's mask. A second table gives
the vertices a lon/lat area gains when projected (`projected`: edges cut until within
DENSIFY_TOLERANCE of their curve), against the former uniform 0.001° steps.

    python benchmarks/bench_rasterize.py [--vertices 100000] [--rows 8192] [--repeat 3]
                                         [--former COMMIT]

`--former COMMIT` adds the row_spans of aefsql/geometry/areas.py as it was at COMMIT (e.g. 75c659c,
the rows x edges matrix), run the same way: mind its memory (~rows x vertices x 30 bytes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

which, vertices, rows, former = json.loads(sys.argv[1])
from rasterio.features import geometry_mask
from rasterio.transform import Affine as RioAffine
from aefsql.geometry.areas import Area, row_spans
from aefsql.format.tiff import Affine
if which == "former":  # the module as it was at that commit, inside the aefsql package
    import importlib.util, subprocess
    source = subprocess.run(["git", "show", f"{former}:aefsql/geometry/areas.py"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("aefsql._former_areas", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "aefsql"
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{former}:aefsql/geometry/areas.py", "exec"), module.__dict__)
    Area, row_spans = module.Area, module.row_spans

def outline(cx, cy, radius, n, seed):
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * (1 + 0.03 * rng.uniform(-1, 1, n))
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    return np.vstack([ring, ring[:1]])

size = rows * 10.0
x0, y0 = 500000.0, 4000000.0
outer = outline(x0 + 0.5 * size, y0 + 0.5 * size, 0.42 * size, vertices, 1)
hole = outline(x0 + 0.5 * size, y0 + 0.5 * size, 0.1 * size, max(4, vertices // 20), 2)[::-1]
part = outline(x0 + 0.95 * size, y0 + 0.1 * size, 0.04 * size, max(4, vertices // 50), 3)
transform = Affine(10.0, 0.0, x0, 0.0, -10.0, y0 + size)
before = rss()
start = time.perf_counter()
if which in ("aefsql", "former"):
    spans = row_spans(Area((outer, hole, part), 32633), transform, rows, rows)
    seconds = time.perf_counter() - start
    pixels = int((spans[:, 2] - spans[:, 1]).sum())
    extra = {"spans": len(spans), "span_bytes": spans.nbytes}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mask = np.zeros((rows, rows), dtype=bool)  # after the peak is read: checking only
    for r, a, b in spans:
        mask[r, a:b] = True
    np.save(sys.argv[2], np.packbits(mask))
else:
    geometry = {"type": "MultiPolygon",
                "coordinates": [[outer.tolist(), hole.tolist()], [part.tolist()]]}
    rio = RioAffine(10.0, 0.0, x0, 0.0, -10.0, y0 + size)
    mask = geometry_mask([geometry], (rows, rows), rio, invert=True, all_touched=False)
    seconds = time.perf_counter() - start
    pixels = int(mask.sum())
    extra = {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(sys.argv[2], np.packbits(mask))
print(json.dumps({"seconds": seconds, "peak": peak, "rise": peak - before, "pixels": pixels,
                  **extra}))
"""

SMALL = r"""
import json, sys, time
import numpy as np
from aefsql.geometry.areas import Area, row_spans
from aefsql.format.tiff import Affine

former = json.loads(sys.argv[1])
if former:  # as in CHILD
    import importlib.util, subprocess
    source = subprocess.run(["git", "show", f"{former}:aefsql/geometry/areas.py"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("aefsql._former_areas", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "aefsql"
    sys.modules[spec.name] = module
    exec(compile(source, f"{former}:aefsql/geometry/areas.py", "exec"), module.__dict__)
    Area, row_spans = module.Area, module.row_spans
transform = Affine(10.0, 0.0, 500000.0, 0.0, 10.0, 4000000.0)
ring = np.array([[501000.0, 4001000.0], [501100.0, 4001000.0], [501100.0, 4001080.0],
                 [501000.0, 4001080.0], [501000.0, 4001000.0]]) + 3.3
area = Area((ring,), 32633)
for _ in range(200):
    row_spans(area, transform, 8192, 8192)
start = time.perf_counter()
for _ in range(5000):
    row_spans(area, transform, 8192, 8192)
print(json.dumps((time.perf_counter() - start) / 5000))
"""

DENSIFY = r"""
import json, sys, time
import numpy as np
from aefsql.geometry.areas import area_from, densified, projected
from aefsql.geometry.geo import polygon_wkb

results = []
for name, box in [("1° x 1° box, 45°N", [12.0, 45.0, 13.0, 46.0]),
                  ("0.1° x 0.1° field, 45°N", [12.4, 45.4, 12.5, 45.5]),
                  ("3° x 1° strip, 60°N", [10.5, 60.0, 13.5, 61.0])]:
    area = area_from(box, 4326)
    start = time.perf_counter()
    moved = projected(area, 32633)
    seconds = time.perf_counter() - start
    former = len(densified(area.rings[0], 0.001))
    results.append([name, former, len(moved.rings[0]), seconds])
rng = np.random.default_rng(0)
n = 100_000
angles = np.sort(rng.uniform(0, 2 * np.pi, n))
radii = 0.35 * (1 + 0.03 * rng.uniform(-1, 1, n))
lon, lat = 12.5 + radii * np.cos(angles) / np.cos(np.radians(45)), 45.5 + radii * np.sin(angles)
ring = np.column_stack([np.append(lon, lon[0]), np.append(lat, lat[0])])
area = area_from(polygon_wkb(ring[:, 0], ring[:, 1]), 4326)
start = time.perf_counter()
moved = projected(area, 32633)
seconds = time.perf_counter() - start
results.append([f"{n:,}-vertex county, 45°N", len(densified(ring, 0.001)), len(moved.rings[0]),
                seconds])
print(json.dumps(results))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertices", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--former", default=None, help="a commit whose row_spans to add")
    args = parser.parse_args()
    import tempfile

    import numpy as np

    runs: dict[str, list[dict]] = {"aefsql": [], "gdal": []}
    if args.former:
        runs["former"] = []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(args.repeat):
            for which in runs:  # interleaved: both see the same machine load
                path = f"{folder}/{which}{k}.npy"
                options = json.dumps([which, args.vertices, args.rows, args.former])
                runs[which].append(child(CHILD, options, path))
        same = all(
            np.array_equal(np.load(f"{folder}/{which}0.npy"), np.load(f"{folder}/gdal0.npy"))
            for which in runs
        )
    mib = 2**20
    more = args.vertices // 20 + args.vertices // 50
    print(
        f"{args.vertices:,} vertices (+ hole and part: {more:,}), {args.rows} x {args.rows} "
        f"pixels; best of {args.repeat} fresh processes"
    )
    print(f"{'':10} {'seconds':>8} {'peak MiB':>9} {'rise MiB':>9} {'pixels':>12}")
    best = {}
    for which, found in runs.items():
        best[which] = min(found, key=lambda r: r["seconds"])
        rise = min(r["rise"] for r in found) / mib
        peak = min(r["peak"] for r in found) / mib
        print(
            f"{which:10} {best[which]['seconds']:8.2f} {peak:9.0f} {rise:9.0f} "
            f"{best[which]['pixels']:12,}"
        )
    a = best["aefsql"]
    if args.former:
        f = best["former"]
        print(f"former / aefsql time: {f['seconds'] / a['seconds']:.1f}")
    print(
        f"aefsql / GDAL time: {a['seconds'] / best['gdal']['seconds']:.2f}; spans: "
        f"{a['spans']:,} ({a['span_bytes'] / mib:.0f} MiB); masks equal: {same}"
    )
    small = {"aefsql": child(SMALL, json.dumps(None))}
    if args.former:
        small["former"] = child(SMALL, json.dumps(args.former))
    print(
        "a 10 x 8-pixel parcel on an 8192-row tile, per call: "
        + ", ".join(f"{which} {seconds * 1e6:.0f} µs" for which, seconds in small.items())
    )
    print()
    heading = "lon/lat area projected to EPSG:32633"
    print(f"{heading:34} {'0.001° steps':>13} {'adaptive':>9} {'seconds':>8}")
    for name, former, now, seconds in child(DENSIFY):
        print(f"{name:34} {former:13,} {now:9,} {seconds:8.3f}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
