-- Analyses over an area's pixels, computed in the kernel from the int8 blocks: aef_similarity
-- and aef_change.

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
-- tile's CRS `crs`; lon/lat are projected only when a query reads them, and `geom` (with
-- `geometry`) as aef_pixels gives it.
CREATE OR REPLACE TEMP MACRO aef_similarity(
    area,
    reference,
    years := NULL,
    year := NULL,
    crs := NULL,
    level := 0,
    negatives := NULL,
    max_bytes := NULL,
    geometry := NULL
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
    SELECT chunk.year AS __aef_year, chunk.path AS __aef_path,
           unnest({udf}_chunk_similarity(chunk.path, chunk.year, chunk.row, chunk.col0,
                                         chunk.col1, chunk.centroid, CAST(level AS INTEGER),
                                         (SELECT __aef_query FROM query)),
                  recursive := true)
    FROM chunks
)
SELECT __aef_year AS year, location, xy_crs AS crs, x, y,
       __aef_lonlat.lon AS lon, __aef_lonlat.lat AS lat,
       -- (one COLUMNS: one that selects nothing is an error)
       COLUMNS(lambda c: c = 'similarity'
                         OR (c = 'geom' AND {udf}_geometry_wanted(CAST(geometry AS VARCHAR))))
FROM (
    -- geometry := …: `geom` as aef_pixels gives it, left out of a query that does not read it.
    SELECT *, __aef_pixel_geom(geometry, __aef_lonlat, __aef_path, level, x, y) AS geom
    FROM (SELECT *, {udf}_pixel_lonlat(x, y, xy_crs) AS __aef_lonlat FROM pixels)
);

-- aef_change: one row per location of `area` and pair of consecutive years (of the sorted,
-- distinct `years`, two or more), with `similarity`, the cosine of the location's de-quantized
-- embeddings in `year_from` and `year_to`; NULL where either is nodata or the year has no file
-- there.
--
-- Locations are aef_pixels' (centre inside `area`, in `crs`, one tile each, as many UTM zones
-- as the area spans), planned once for all the years over the tile positions any of them has
-- (AEF's tiles are the same grids every year): each location once per pair, none dropped.
-- Each block of each year is read once and all pairs computed from the values in hand: no
-- join, no FLOAT[64] per pixel. `level` k compares the k-th overview's pixels; `max_bytes`
-- (pixels x 64 bands x years of int8, default 16 GiB) is checked before anything is read.
-- Rows come in no set order. `geometry` adds `geom` as aef_pixels gives it.
CREATE OR REPLACE TEMP MACRO aef_change(
    area,
    years := NULL,
    crs := NULL,
    level := 0,
    max_bytes := NULL,
    geometry := NULL
) AS TABLE
WITH checked AS MATERIALIZED (
    FROM __aef_area_options('aef_change', years, NULL, crs, NULL, level := level)
),
units AS (
    -- One tile position a unit, each followed by NULLs up to a DuckDB vector: one unit is
    -- planned a call, so rows stream at once. (The years travel in each unit and chunk: a
    -- join here would be DuckDB's to reorder.)
    SELECT unnest({udf}_change_units(__aef_area_wkb(area), __aef_area_box(area),
                                     __aef_area_text(area), typeof(area), __aef_crs,
                                     __aef_years, CAST({band_count} AS INTEGER),
                                     CAST(max_bytes AS BIGINT), CAST(level AS INTEGER)))
               AS unit
    FROM checked
),
chunks AS (
    SELECT unnest({udf}_change_chunks(unit)) AS chunk, unit.years AS __aef_years
    FROM units
),
pairs AS (
    -- (A location's pixel is the same in every year's file: AEF's grids are the same.)
    SELECT list_filter(chunk.paths, lambda p: p IS NOT NULL)[1] AS __aef_path,
           unnest({udf}_change_pixels(chunk.paths, __aef_years, chunk.row, chunk.col0,
                                      chunk.col1, chunk.centroid, CAST(level AS INTEGER)),
                  recursive := true)
    FROM chunks
)
-- lon/lat by aef_pixels' UDF of their own, left out of a query that reads neither.
SELECT location, xy_crs AS crs, x, y,
       __aef_lonlat.lon AS lon, __aef_lonlat.lat AS lat,
       year_from, year_to,
       -- (one COLUMNS: one that selects nothing is an error)
       COLUMNS(lambda c: c = 'similarity'
                         OR (c = 'geom' AND {udf}_geometry_wanted(CAST(geometry AS VARCHAR))))
FROM (
    -- geometry := …: `geom` as aef_pixels gives it, left out of a query that does not read it.
    SELECT *, __aef_pixel_geom(geometry, __aef_lonlat, __aef_path, level, x, y) AS geom
    FROM (SELECT *, {udf}_pixel_lonlat(x, y, xy_crs) AS __aef_lonlat FROM pairs)
);
