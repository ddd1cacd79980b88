"""Quickstart: write the demo collection, then join places against it from Python and SQL,
and read areas: every pixel of a box, a picture of it, and the mean embedding of parcels.

python examples/quickstart.py [FOLDER]   (read_area needs `pip install 'aefsql[xarray]'`)
"""

import sys
import tempfile
from pathlib import Path

import pyarrow as pa

import aefsql
from aefsql.demo import write_demo_collection

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
index = write_demo_collection(folder)

places = pa.table(
    {
        "place": ["civic_center", "mission_dolores", "lima_centro", "open_ocean"],
        "lon": [-122.4177, -122.4270, -77.0300, -40.0],
        "lat": [37.7793, 37.7644, -12.0450, 10.0],
    }
)

# Python: an Arrow table in, the same rows with the bands out.
table = aefsql.sample_points(places, years=[2023, 2024], bands=["A00", "A01"], catalog=str(index))
print(table.to_string(preview_cols=8))

# SQL: the canonical join, then de-quantized vectors and a year-to-year similarity.
con = aefsql.connect(catalog=str(index))
con.register("points", places)
print(con.sql((Path(__file__).parent / "canonical_join.sql").read_text().rstrip().rstrip(";")))
print(
    con.sql("""
    SELECT place,
           round(array_cosine_similarity(aef_vector(aef_embedding(lon, lat, 2023)),
                                         aef_vector(aef_embedding(lon, lat, 2024))), 3)
               AS same_place_2023_vs_2024
    FROM points
""")
)

# Areas, across the 12°E seam where a 32N and a 33N tile overlap (each pixel is read once).
area = [11.995, 44.995, 12.005, 45.005]  # west, south, east, north in lon/lat
cube = aefsql.read_area(area, years=[2023, 2024], bands=["A00", "A01", "A02"], catalog=str(index))
print("read_area:", dict(cube.sizes), cube.dtype, "(north-up, nodata -128)")
aefsql.picture(area, 2024, folder / "area.png", catalog=str(index))  # 3 principal components
print("picture:", folder / "area.png")

# The same pixels in SQL, one row each; then each parcel's mean embedding and its change.
print(
    con.sql("""
    SELECT year, count(*) AS pixels, count(A00) AS with_data
    FROM aef_pixels([11.995, 44.995, 12.005, 45.005], years := [2023, 2024])
    GROUP BY year ORDER BY year
""")
)
con.register(
    "parcels",
    pa.table(
        {
            "parcel": ["field", "across_the_seam", "lagoon"],
            "geom": [
                "POLYGON((12.01 45.0, 12.02 45.0, 12.02 45.005, 12.01 45.005, 12.01 45.0))",
                "POLYGON((11.998 44.998, 12.002 44.998, 12.002 45.002, 11.998 45.002, "
                "11.998 44.998))",
                "POLYGON((12.025 45.004, 12.035 45.004, 12.035 45.008, 12.025 45.004))",
            ],
        }
    ),
)
print(
    con.sql("""
    WITH z AS (FROM aef_zonal('parcels', years := [2023, 2024]))
    SELECT a.parcel, a.pixels, a.nodata_pixels,
           round(array_cosine_similarity(a.embedding, b.embedding), 3) AS mean_2023_vs_2024
    FROM z a JOIN z b ON a.parcel = b.parcel AND a.year = 2023 AND b.year = 2024
    ORDER BY a.parcel
""")
)
con.close()
