-- Whole-table sampling: aef_sample_points and its cost plan, aef_plan.

-- The points_table argument as query_table should see it: a file name ('plots.csv') quoted
-- as one identifier, else DuckDB's Python replacement scan reads it as table `csv` of schema
-- `plots` and fails on any module named csv (or json) in the caller's scope.
CREATE OR REPLACE TEMP MACRO __aef_table(points_table) AS
    CASE WHEN regexp_matches(points_table,
                             '\.(csv|tsv|txt|parquet|json|jsonl|ndjson)(\.gz|\.zst)?$', 'i')
              AND NOT starts_with(points_table, '"')
         THEN '"' || replace(points_table, '"', '""') || '"'
         ELSE points_table END;

-- The checked parameters of a whole-table call, as one row (years INTEGER[], crs INTEGER,
-- bands VARCHAR[]); a bad parameter fails the query with a message that says the fix. The
-- rules live in Python (aefsql/options.py), shared with the Python API and the CLI.
CREATE OR REPLACE TEMP MACRO __aef_options(
    points_table, function, years, year, crs, x_column, y_column, geometry_column, bands,
    on_error, as_vector, level := 0
) AS TABLE
WITH columns AS (
    -- The points table's column names, even when it has no row. `points_table` is the
    -- materialized copy with __aef_row: a stream (an Arrow reader) can be scanned only once.
    SELECT list_filter(json_keys(to_json(p)), lambda c: c <> '__aef_row') AS names
    FROM (SELECT 1) LEFT JOIN (FROM query_table(points_table) LIMIT 1) p ON true
),
resolved AS (
    SELECT {udf}_options(to_json({
        'function': function, 'years': years, 'year': year, 'crs': crs,
        'x_column': x_column, 'y_column': y_column, 'geometry_column': geometry_column,
        'bands': bands, 'on_error': on_error, 'as_vector': as_vector, 'columns': names,
        'level': level
    })) AS o
    FROM columns
)
-- (The check sits inside the years, which every query uses: an unused column would be
-- optimised away, and its error with it.)
SELECT CASE WHEN o.error IS NOT NULL THEN error(o.error) ELSE o.years END AS __aef_years,
       o.crs AS __aef_crs, o.bands AS __aef_bands
FROM resolved;

-- Every (row, year) of a points table (it must carry __aef_row) with its coordinates in the
-- given CRS, the tile that holds it (NULL where none does or x/y is NULL or invalid) and its
-- pixel there (row and column: found while locating, read without projecting it again).
-- A column named by x_column/y_column/geometry_column that does not exist must not stop the
-- query from binding (the options say which it is): each selection also matches a NULL
-- stand-in placed first, and the last item of the list is the column, or the stand-in.
CREATE OR REPLACE TEMP MACRO __aef_located(
    points_table, options_table, x_column, y_column, geometry_column
) AS TABLE
WITH selected AS (
    SELECT
        __aef_row,
        CAST(COLUMNS(lambda c: c = '__aef_no_x' OR c = x_column) AS DOUBLE),
        CAST(COLUMNS(lambda c: c = '__aef_no_y' OR c = y_column) AS DOUBLE),
        ST_AsWKB(CAST(COLUMNS(lambda c: c = '__aef_no_g' OR c = geometry_column) AS GEOMETRY))
    FROM (
        SELECT NULL::DOUBLE AS __aef_no_x, NULL::DOUBLE AS __aef_no_y,
               NULL::GEOMETRY AS __aef_no_g, *
        FROM query_table(points_table)
    )
),
coordinates AS (
    SELECT
        __aef_row,
        list_last(list_value(*COLUMNS(lambda c: c = '__aef_no_x' OR c = x_column))) AS __aef_x,
        list_last(list_value(*COLUMNS(lambda c: c = '__aef_no_y' OR c = y_column))) AS __aef_y,
        list_last(list_value(*COLUMNS(lambda c: c = '__aef_no_g' OR c = geometry_column)))
            AS __aef_wkb
    FROM selected
),
points AS (
    SELECT __aef_row,
           CASE WHEN geometry_column IS NULL THEN {'x': __aef_x, 'y': __aef_y}
                ELSE {udf}_point_xy(__aef_wkb) END AS xy
    FROM coordinates
),
wanted_years AS (
    SELECT unnest(__aef_years) AS __aef_year, __aef_crs FROM query_table(options_table)
),
located AS (
    SELECT p.__aef_row, p.xy.x AS __aef_x, p.xy.y AS __aef_y, y.__aef_crs, y.__aef_year,
           {udf}_locate_pixel(p.xy.x, p.xy.y, CAST(y.__aef_year AS DOUBLE), y.__aef_crs)
               AS __aef_at
    FROM points p CROSS JOIN wanted_years y
)
SELECT * EXCLUDE (__aef_at), __aef_at.path AS __aef_path,
       __aef_at.pixel_row AS __aef_pixel_row, __aef_at.pixel_col AS __aef_pixel_col
FROM located;

-- The located points of each file, year and CRS, at their pixels (the arguments of
-- {udf}_sample_group): each file's points are sampled in one call, so that each block is
-- read once. Points in no tile are left out.
CREATE OR REPLACE TEMP MACRO __aef_groups(located_table) AS TABLE
SELECT __aef_path, __aef_year, __aef_crs, list(__aef_row) AS __aef_rows,
       list(__aef_pixel_row) AS __aef_pixel_rows, list(__aef_pixel_col) AS __aef_pixel_cols
FROM query_table(located_table)
WHERE __aef_path IS NOT NULL
GROUP BY __aef_path, __aef_year, __aef_crs;

-- aef_sample_points: every row of a points table, once per distinct year, with the sampled
-- bands.
--
-- Points are grouped per file so that the sampling UDF sees all the points of a file at once:
-- each block is read and decoded once, and the UDF runs exactly once per group whatever
-- filters the outer query adds. Rows whose point lies in no tile, or whose x/y is NULL or
-- invalid, come back with NULL bands. With on_error := 'null', rows of a file that cannot be
-- read get NULL bands and an aef_error column says why; the default fails the query.
-- status := true adds `status`, what each row holds (valid, nodata, outside, no_year, error:
-- aefsql/kernels/coverage.py).
-- `geometry` 'point' or 'pixel' adds `geom GEOMETRY('OGC:CRS84')`: the centre or footprint
-- of the pixel sampled (NULL where no tile holds the point).
-- A table macro takes a table, view or CTE name, or a file: not a subquery.
CREATE OR REPLACE TEMP MACRO aef_sample_points(
    points_table,
    years := NULL,
    year := NULL,
    x_column := 'lon',
    y_column := 'lat',
    geometry_column := NULL,
    crs := NULL,
    bands := NULL,
    on_error := 'raise',
    as_vector := false,
    status := false,
    geometry := NULL
) AS TABLE
WITH points AS MATERIALIZED (
    -- Each input column passes through; one named as a column this function adds (`year`,
    -- a band…) or as aefsql's own (__aef_row…) fails the query while it binds (the lambda
    -- runs then, once per name), so DESCRIBE refuses it too rather than showing DuckDB's
    -- renamed `year_1`. The rule is in Python (aefsql/options.py).
    SELECT row_number() OVER () AS __aef_row,
           COLUMNS(lambda c: {udf}_input_column(c, to_json({
               'function': 'aef_sample_points', 'bands': bands, 'on_error': on_error,
               'as_vector': as_vector, 'status': status, 'geometry': geometry})))
    FROM query_table(__aef_table(points_table))
),
options AS MATERIALIZED (
    FROM __aef_options('points', 'aef_sample_points', years, year, crs, x_column,
                       y_column, geometry_column, bands, on_error, as_vector)
),
located AS MATERIALIZED (
    FROM __aef_located('points', 'options', x_column, y_column, geometry_column)
),
-- The values are sampled into a store of this query, each at its output position (row,
-- year), and read back by the last projection, which runs over `points` in input order: a
-- join back onto the rows would keep no order, and sorting the wide rows cost ~100 MiB for
-- 10^6 points (aefsql/duck/sampled.py; benchmarks/README.md, "Issue 24").
store AS MATERIALIZED (
    SELECT {udf}_sample_store(
               (SELECT count(*) FROM points), __aef_years, __aef_bands,
               (SELECT list(DISTINCT __aef_path) FILTER (WHERE __aef_path IS NOT NULL)
                FROM located),
               CAST(geometry AS VARCHAR)
           ) AS __aef_store
    FROM options
),
sampled AS MATERIALIZED (
    SELECT {udf}_sample_group(
               s.__aef_store, g.__aef_path, g.__aef_year, g.__aef_rows, g.__aef_pixel_rows,
               g.__aef_pixel_cols, CAST(on_error AS VARCHAR)
           ) AS __aef_points
    FROM __aef_groups('located') g CROSS JOIN store s
),
-- Each row once per year (the input columns packed as one struct, so that none can clash
-- with a band or error column while they are chosen), with its values. The one-row
-- subqueries are computed before the first row goes through: the sum makes the sampling
-- finish first.
with_values AS (
    SELECT __aef_input, __aef_year,
           {udf}_sampled_values(
               (SELECT __aef_store FROM store), __aef_input.__aef_row, __aef_year,
               (SELECT CAST(sum(__aef_points) AS BIGINT) FROM sampled)
           ) AS __aef_values,
           -- geometry := …: where each value was sampled, left out of a query that does not
           -- read it
           {udf}_sampled_geometry(
               (SELECT __aef_store FROM store), __aef_input.__aef_row, __aef_year,
               CAST(geometry AS VARCHAR), (SELECT CAST(sum(__aef_points) AS BIGINT) FROM sampled)
           ) AS __aef_geom
    FROM (SELECT __aef_p AS __aef_input, unnest((SELECT __aef_years FROM options)) AS __aef_year
          FROM points __aef_p)
),
expanded AS (
    -- (embedding before the values' aef_error and status: it takes the bands' place)
    SELECT __aef_input, __aef_year, aef_vector(__aef_values) AS embedding, __aef_values.*,
           __aef_geom AS geom
    FROM with_values
)
SELECT __aef_input.* EXCLUDE (__aef_row), __aef_year AS year,
       COLUMNS(lambda c:
               ((c SIMILAR TO 'A[0-9][0-9]' OR c = 'embedding')
                AND list_contains({udf}_value_columns(to_json({
                    'bands': bands, 'as_vector': as_vector})), c))
               OR (c = 'aef_error' AND on_error = 'null')
               OR (c = 'status' AND status)
               OR (c = 'geom' AND {udf}_geometry_wanted(CAST(geometry AS VARCHAR))))
FROM expanded;

-- aef_plan: what aef_sample_points would read, from headers only (no pixel is read): per file,
-- the points it holds, the distinct blocks, the requests after merging nearby ranges, and the
-- bytes. Points in no tile form one row a year with a NULL path, and `note` says why: the
-- catalog lacks the year, the points are outside coverage, or look swapped or in another CRS.
CREATE OR REPLACE TEMP MACRO aef_plan(
    points_table,
    years := NULL,
    year := NULL,
    x_column := 'lon',
    y_column := 'lat',
    geometry_column := NULL,
    crs := NULL,
    bands := NULL
) AS TABLE
WITH points AS MATERIALIZED (
    -- (an input column named as aefsql's own is refused: see aef_sample_points)
    SELECT row_number() OVER () AS __aef_row,
           COLUMNS(lambda c: {udf}_input_column(c, to_json({
               'function': 'aef_plan', 'bands': bands, 'on_error': 'raise',
               'as_vector': false})))
    FROM query_table(__aef_table(points_table))
),
options AS MATERIALIZED (
    FROM __aef_options('points', 'aef_plan', years, year, crs, x_column, y_column,
                       geometry_column, bands, 'raise', false)
),
located AS (
    FROM __aef_located('points', 'options', x_column, y_column, geometry_column)
),
planned AS (
    SELECT
        l.__aef_path,
        l.__aef_year,
        CASE WHEN l.__aef_path IS NULL THEN {'points': count(*), 'blocks': 0, 'requests': 0,
                                             'bytes': 0}
             ELSE {udf}_plan_group(l.__aef_path, list(l.__aef_x), list(l.__aef_y), l.__aef_crs,
                                   any_value(o.__aef_bands))
        END AS plan,
        -- Why these points are in no tile (aefsql/kernels/coverage.py, as Python's warnings say).
        CASE WHEN l.__aef_path IS NULL
             THEN {udf}_points_note(list(l.__aef_x), list(l.__aef_y), l.__aef_crs,
                                    l.__aef_year) END AS note
    FROM located l CROSS JOIN options o
    GROUP BY l.__aef_path, l.__aef_year, l.__aef_crs
)
-- (`year` is a parameter here: output names are given as aliases, never read back.)
SELECT __aef_path AS path, __aef_year AS year, CAST(sum(plan.points) AS BIGINT) AS points,
       CAST(sum(plan.blocks) AS BIGINT) AS blocks,
       CAST(sum(plan.requests) AS BIGINT) AS requests, CAST(sum(plan.bytes) AS BIGINT) AS bytes,
       any_value(note) AS note
FROM planned
GROUP BY __aef_path, __aef_year
ORDER BY __aef_path NULLS LAST, __aef_year;
