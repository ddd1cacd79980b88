"""Quickstart: write the demo collection, then join places against it from Python and SQL.

python examples/quickstart.py [FOLDER]
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
con.close()
