-- Whole-table sampling: aef_sample_points and its cost plan, aef_plan.

-- Every (row, year) of a points table with its coordinates and the tile that holds it (NULL
-- where none does or the coordinates are NULL/invalid). `points_table` must carry __aef_row.
CREATE OR REPLACE TEMP MACRO __aef_located(points_table, year, years, x_column, y_column, bands)
AS TABLE
WITH wanted_years AS (
    SELECT unnest(
        CASE
            WHEN bands IS NOT NULL
                 AND NOT list_has_all(aef_band_names(), CAST(bands AS VARCHAR[]))
                THEN error('unknown band name in ' || CAST(bands AS VARCHAR)
                           || ': bands are named A00..A63')
            WHEN years IS NOT NULL THEN CAST(years AS INTEGER[])
            WHEN year IS NOT NULL THEN [CAST(year AS INTEGER)]
            ELSE error('pass year := 2023 or years := [2023, 2024]')
        END
    ) AS __aef_year
),
coordinates AS (
    SELECT
        __aef_row,
        CAST(COLUMNS(lambda c: c = x_column) AS DOUBLE) AS __aef_x,
        CAST(COLUMNS(lambda c: c = y_column) AS DOUBLE) AS __aef_y
    FROM query_table(points_table)
)
SELECT c.*, y.__aef_year, aef_locate(c.__aef_x, c.__aef_y, y.__aef_year) AS __aef_path
FROM coordinates c CROSS JOIN wanted_years y;

-- aef_sample_points: every row of a points table, once per year, with the sampled bands.
--
-- Points are grouped per file so that the sampling UDF sees all the points of a file at once:
-- each block is read and decoded once, and the UDF runs exactly once per group whatever
-- filters the outer query adds. Rows whose point lies in no tile, or whose x/y is NULL or
-- invalid, come back with NULL bands. With on_error := 'null', rows of a file that cannot be
-- read get NULL bands and an aef_error column says why; the default fails the query.
CREATE OR REPLACE TEMP MACRO aef_sample_points(
    points_table,
    year := NULL,
    years := NULL,
    x_column := 'lon',
    y_column := 'lat',
    bands := NULL,
    on_error := 'raise'
) AS TABLE
WITH points AS MATERIALIZED (
    SELECT row_number() OVER () AS __aef_row, * FROM query_table(points_table)
),
located AS MATERIALIZED (
    SELECT * FROM __aef_located('points', year, years, x_column, y_column, bands)
),
sampled AS (
    SELECT __aef_year, unnest(
        {udf}_sample_group(
            __aef_path, list(__aef_row), list(__aef_x), list(__aef_y),
            coalesce(CAST(bands AS VARCHAR[]), aef_band_names()), CAST(on_error AS VARCHAR)
        ),
        recursive := true
    )
    FROM located
    WHERE __aef_path IS NOT NULL
    GROUP BY __aef_path, __aef_year
),
wanted_bands AS (
    SELECT
        __aef_year,
        -- __aef_row keeps the selection non-empty whatever `bands` says.
        COLUMNS(lambda c: c = '__aef_row' OR (c SIMILAR TO 'A[0-9][0-9]'
                AND list_contains(coalesce(CAST(bands AS VARCHAR[]), aef_band_names()), c))
                OR (c = 'aef_error' AND on_error = 'null'))
    FROM sampled
)
SELECT p.* EXCLUDE (__aef_row), l.__aef_year AS year, s.* EXCLUDE (__aef_row, __aef_year)
FROM points p
JOIN located l ON l.__aef_row = p.__aef_row
LEFT JOIN wanted_bands s ON s.__aef_row = l.__aef_row AND s.__aef_year = l.__aef_year
ORDER BY p.__aef_row, l.__aef_year;

-- aef_plan: what aef_sample_points would read, from headers only (no pixel is read): per file,
-- the points it holds, the distinct blocks, the requests after merging nearby ranges, and the
-- bytes. Points in no tile form one row with a NULL path.
CREATE OR REPLACE TEMP MACRO aef_plan(
    points_table,
    year := NULL,
    years := NULL,
    x_column := 'lon',
    y_column := 'lat',
    bands := NULL
) AS TABLE
WITH points AS MATERIALIZED (
    SELECT row_number() OVER () AS __aef_row, * FROM query_table(points_table)
),
located AS (
    SELECT * FROM __aef_located('points', year, years, x_column, y_column, bands)
),
planned AS (
    SELECT
        __aef_path,
        __aef_year,
        CASE WHEN __aef_path IS NULL THEN {'points': count(*), 'blocks': 0, 'requests': 0,
                                           'bytes': 0}
             ELSE {udf}_plan_group(__aef_path, list(__aef_x), list(__aef_y),
                                   coalesce(CAST(bands AS VARCHAR[]), aef_band_names()))
        END AS plan
    FROM located
    GROUP BY __aef_path, __aef_year
)
-- (`year` is a parameter here: output names are given as aliases, never read back.)
SELECT __aef_path AS path, __aef_year AS year, plan.points, plan.blocks, plan.requests, plan.bytes
FROM planned
ORDER BY __aef_path NULLS LAST, __aef_year;
