-- Analyses over an area's pixels, computed in the kernel from the int8 blocks: aef_similarity.

-- aef_similarity: one row per pixel whose centre lies inside `area`, per year, with where it
-- is and `similarity`, the cosine of its embedding with a query vector; every location from
-- exactly one tile, as aef_pixels gives them.
--
-- `reference` is one embedding (FLOAT[64], de-quantized, as aef_pixels(as_vector := true)
-- and aef_sample_points give it) or a list of them (few-shot); `negatives` a list of
-- embeddings to rank away from. The query is 2·mean(reference) − mean(negatives) (GeoVibes';
-- Rocchio's with the positives twice): mean(reference) − mean(negatives) alone is a small
-- difference when both look alike, pointing far from either; without negatives it is
-- mean(reference). `similarity` is FLOAT (computed in float32 from the int8 values, to about
-- 1e-6; half the bytes of DOUBLE over 10^8 rows), NULL where the pixel is nodata (any band)
-- or all zeros: the row stays, so every pixel comes once. No pixel's 64 values are ever held
-- as columns or as a vector. `area`, `years`, `crs`, `level` and `max_bytes` (counted as 64
-- bands of int8, the bytes read) as for aef_pixels; `x`/`y` are the pixel centre in its
-- tile's CRS `crs`; lon/lat are projected only when a query reads them.
CREATE OR REPLACE TEMP MACRO aef_similarity(
    area,
    reference,
    years := NULL,
    year := NULL,
    crs := NULL,
    level := 0,
    negatives := NULL,
    max_bytes := NULL
) AS TABLE
WITH query AS MATERIALIZED (
    -- Checked before anything is planned or read (a one-row build side, see below).
    SELECT CASE WHEN q.error IS NOT NULL THEN error(q.error) ELSE q.query END AS __aef_query
    FROM (SELECT {udf}_similarity_query(to_json(reference), to_json(negatives)) AS q)
),
chunks AS (
    FROM __aef_area_chunks(area, years, year, crs, NULL, max_bytes, level, 'aef_similarity')
),
pixels AS (
    -- (The query as a scalar subquery: DuckDB builds its one row first and streams the
    -- chunks past it, as it would not promise of a join.)
    SELECT chunk.year AS __aef_year,
           unnest({udf}_chunk_similarity(chunk.path, chunk.year, chunk.row, chunk.col0,
                                         chunk.col1, chunk.centroid, CAST(level AS INTEGER),
                                         (SELECT __aef_query FROM query)),
                  recursive := true)
    FROM chunks
)
SELECT __aef_year AS year, location, xy_crs AS crs, x, y,
       {udf}_pixel_lonlat(x, y, xy_crs).lon AS lon, {udf}_pixel_lonlat(x, y, xy_crs).lat AS lat,
       similarity
FROM pixels;
