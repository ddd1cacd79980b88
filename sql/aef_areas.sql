-- Areas: aef_pixels (every pixel of an area) and aef_zonal (each polygon's mean embedding).

-- An area argument as WKB, or NULL when it is a box: GEOMETRY, WKB BLOB or WKT text.
CREATE OR REPLACE TEMP MACRO __aef_area_wkb(area) AS ST_AsWKB(try_cast(area AS GEOMETRY));

-- An area argument as a box [west, south, east, north], or NULL when it is a geometry.
CREATE OR REPLACE TEMP MACRO __aef_area_box(area) AS try_cast(area AS DOUBLE[]);

-- An area argument as text when it is neither a geometry nor a box (NULL otherwise), and
-- its type: the UDF gives DuckDB's own message for it (try_cast loses the parse position).
CREATE OR REPLACE TEMP MACRO __aef_area_text(area) AS
    CASE WHEN area IS NOT NULL AND try_cast(area AS GEOMETRY) IS NULL
              AND try_cast(area AS DOUBLE[]) IS NULL
         THEN CAST(area AS VARCHAR) END;

-- An area function's checked years, crs and bands (the error options.py gives, raised).
CREATE OR REPLACE TEMP MACRO __aef_area_options(function, years, year, crs, bands,
                                                as_vector := false, level := 0) AS TABLE
SELECT CASE WHEN o.error IS NOT NULL THEN error(o.error) ELSE o.years END AS __aef_years,
       o.crs AS __aef_crs, o.bands AS __aef_bands
FROM (
    SELECT {udf}_options(to_json({
        'function': function, 'years': years, 'year': year, 'crs': crs, 'bands': bands,
        'as_vector': as_vector, 'level': level
    })) AS o
);

-- The chunks of an area function's pixels (each with the checked band names beside it): the
-- options checked, then the plan in units (a year's tiles), each followed by NULLs up to a
-- DuckDB vector: one unit is planned a call, so rows stream at once and the plan held stays
-- bounded. `function` names the caller in the options' messages.
CREATE OR REPLACE TEMP MACRO __aef_area_chunks(area, years, year, crs, bands, max_bytes, level,
                                               function, as_vector := false) AS TABLE
WITH checked AS MATERIALIZED (
    FROM __aef_area_options(function, years, year, crs, bands, as_vector := as_vector,
                            level := level)
),
units AS (
    SELECT unnest({udf}_area_units(__aef_area_wkb(area), __aef_area_box(area),
                                   __aef_area_text(area), typeof(area), __aef_crs,
                                   __aef_years, CAST(len(__aef_bands) AS INTEGER),
                                   CAST(max_bytes AS BIGINT), CAST(level AS INTEGER))) AS unit,
           __aef_bands
    FROM checked
)
-- (The bands travel beside each unit and chunk: a join here would be DuckDB's to reorder,
-- and it may then plan every unit before the first row.)
SELECT unnest({udf}_unit_chunks(unit)) AS chunk, __aef_bands
FROM units;

-- A pixel's `geom` for geometry := 'point' (its centre: the point its lon/lat give, so that
-- it is projected once for the three) or 'pixel' (its footprint, by a UDF of its own). A
-- query that does not read `geom` leaves both UDFs out.
CREATE OR REPLACE TEMP MACRO __aef_pixel_geom(geometry, lonlat, path, level, x, y) AS
    CASE WHEN CAST(geometry AS VARCHAR) = 'point' THEN {udf}_lonlat_point(lonlat)
         ELSE {udf}_pixel_geometry(path, CAST(level AS INTEGER), x, y,
                                   CAST(geometry AS VARCHAR)) END;

-- aef_pixels: one row per pixel whose centre lies inside `area`, per year, with where it is
-- and its bands; every location from exactly one tile.
--
-- `area` is a GEOMETRY (polygon, multipolygon), WKB, WKT, or a box [west, south, east,
-- north], in `crs` (default lon/lat). `location` is the same BIGINT for the same pixel in
-- every year: join two years on it for a change map. `x`/`y` are the pixel centre in the
-- CRS of its tile, `crs` ('EPSG:32633', as aef_chips' chip_crs): an area across a UTM seam
-- has pixels of two zones. Rows come in no set order. `level` k reads the files' k-th
-- overview (0: full resolution): row, col, x, y are that level's. `as_vector` gives one
-- `embedding FLOAT[64]` (de-quantized in the kernel; NULL where any band is nodata) in place
-- of the 64 band columns, for array_cosine_similarity and friends. `geometry` 'point' or
-- 'pixel' adds `geom GEOMETRY('OGC:CRS84')`: the pixel's centre or its footprint polygon
-- (aefsql/geometry/footprints.py), computed only when read.
CREATE OR REPLACE TEMP MACRO aef_pixels(
    area,
    years := NULL,
    year := NULL,
    bands := NULL,
    crs := NULL,
    max_bytes := NULL,
    level := 0,
    as_vector := false,
    geometry := NULL
) AS TABLE
WITH chunks AS (
    FROM __aef_area_chunks(area, years, year, crs, bands, max_bytes, level, 'aef_pixels',
                           as_vector := as_vector)
),
with_bands AS (
    SELECT chunk.year AS __aef_year, chunk.path AS __aef_path,
           unnest({udf}_chunk_pixels(chunk.path, chunk.year, chunk.row, chunk.col0,
                                     chunk.col1, chunk.centroid, __aef_bands,
                                     CAST(level AS INTEGER)),
                  recursive := true)
    FROM chunks
    WHERE NOT as_vector
),
with_vectors AS (
    -- (A UDF has one result type: the vectors come from their own, and the branch that
    -- as_vector rules out gets no chunk.)
    SELECT chunk.year AS __aef_year, chunk.path AS __aef_path,
           unnest({udf}_chunk_vectors(chunk.path, chunk.year, chunk.row, chunk.col0,
                                      chunk.col1, chunk.centroid, CAST(level AS INTEGER)),
                  recursive := true)
    FROM chunks
    WHERE as_vector
),
pixels AS (
    FROM with_bands UNION ALL BY NAME FROM with_vectors
),
placed AS (
    -- geometry := …: `geom` by a UDF of its own, left out of a query that does not read it.
    SELECT *, __aef_pixel_geom(geometry, __aef_lonlat, __aef_path, level, x, y) AS geom
    FROM (SELECT *, {udf}_pixel_lonlat(x, y, xy_crs) AS __aef_lonlat FROM pixels)
)
-- lon/lat by a UDF of their own, which DuckDB leaves out of a query that reads neither
-- (projecting costs more than reading the pixels) and calls once for both.
SELECT __aef_year AS year, location, __aef_path AS path, row, col, x, y, xy_crs AS crs,
       __aef_lonlat.lon AS lon, __aef_lonlat.lat AS lat,
       COLUMNS(lambda c: ((c SIMILAR TO 'A[0-9][0-9]' OR c = 'embedding')
                          AND list_contains({udf}_value_columns(to_json({
                              'bands': bands, 'as_vector': as_vector})), c))
                         -- (in this COLUMNS: one that selects nothing is an error)
                         OR (c = 'geom' AND {udf}_geometry_wanted(CAST(geometry AS VARCHAR))))
FROM placed;

-- aef_area_plan: what aef_pixels would read for `area`, from headers only (no pixel is
-- read): per year, the `tiles` and `blocks` it touches, the `pixels` whose centres lie inside
-- (each location once, as aef_pixels gives them), `value_bytes` (pixels x bands of int8,
-- what max_bytes counts) and a `note` saying why nothing would come back (a year the catalog
-- lacks, an area outside coverage, coordinates that look swapped or in the wrong CRS) or why
-- aef_pixels would refuse the area; NULL when all is well.
CREATE OR REPLACE TEMP MACRO aef_area_plan(
    area,
    years := NULL,
    year := NULL,
    bands := NULL,
    crs := NULL,
    max_bytes := NULL,
    level := 0
) AS TABLE
WITH checked AS MATERIALIZED (
    FROM __aef_area_options('aef_area_plan', years, year, crs, bands, level := level)
),
planned AS (
    SELECT unnest({udf}_area_plan(__aef_area_wkb(area), __aef_area_box(area),
                                  __aef_area_text(area), typeof(area), __aef_crs, __aef_years,
                                  CAST(len(__aef_bands) AS INTEGER), CAST(max_bytes AS BIGINT),
                                  CAST(level AS INTEGER))) AS p
    FROM checked
)
-- (`year` is a parameter here: output names are given as aliases, never read back.)
SELECT p.plan_year AS year, p.tiles, p.blocks, p.pixels, p.value_bytes, p.note
FROM planned
ORDER BY p.plan_year;

-- Each row of a table of polygons as WKB, beside its __aef_row (see __aef_located for the
-- stand-in column that keeps a missing geometry_column from failing to bind); where the value
-- does not cast to GEOMETRY, NULL WKB and the value as text (`__aef_text`) and its type:
-- the UDF names the row and gives DuckDB's own message (try_cast loses it).
CREATE OR REPLACE TEMP MACRO __aef_geometries(polygons_table, geometry_column) AS TABLE
SELECT __aef_row, g.wkb AS __aef_wkb, g.text AS __aef_text, g.type AS __aef_type
FROM (
    SELECT __aef_row,
           list_last(list_value(*COLUMNS(lambda c: c = '__aef_no_g' OR c = geometry_column)))
               AS g
    FROM (
        -- (A one-item list lets one COLUMNS give the three fields: DuckDB takes one COLUMNS
        -- per expression. The text only where the cast fails: a big polygon's WKT is costly.)
        SELECT __aef_row,
               list_transform(
                   [COLUMNS(lambda c: c = '__aef_no_g' OR c = geometry_column)],
                   lambda v: {'wkb': ST_AsWKB(try_cast(v AS GEOMETRY)),
                              'text': CASE WHEN v IS NOT NULL AND try_cast(v AS GEOMETRY) IS NULL
                                           THEN CAST(v AS VARCHAR) END,
                              'type': typeof(v)}
               )[1]
        FROM (SELECT NULL::GEOMETRY AS __aef_no_g, * FROM query_table(polygons_table))
    )
);

-- aef_zonal: every row of a table of polygons, once per distinct year, with `pixels` (the
-- pixel centres inside), `nodata_pixels`, `centroid_pixel` (true when the polygon holds no
-- pixel centre and the pixel under its centroid stands in) and `embedding FLOAT[64]`, the
-- mean de-quantized embedding of its valid pixels (NULL when none is valid). Pixels are
-- counted once each, across tiles and UTM zones; `level` k averages the k-th overview's.
-- A NULL geometry gives 0 pixels. A geometry that is not an area (unparsable WKT or WKB, a
-- LINESTRING, …) fails the query naming its row (1-based, in the table's order) and what is
-- wrong; with on_error := 'null' its row gets NULL results and an `aef_error` column says why,
-- and so do the polygon-years of a file that cannot be read (aefsql/kernels/means.py).
-- status := true adds `status`, what each polygon-year holds (valid, nodata, outside,
-- no_year, error: aefsql/kernels/coverage.py).
CREATE OR REPLACE TEMP MACRO aef_zonal(
    polygons_table,
    years := NULL,
    year := NULL,
    geometry_column := 'geom',
    crs := NULL,
    level := 0,
    on_error := 'raise',
    max_bytes := NULL,
    status := false
) AS TABLE
WITH polygons AS MATERIALIZED (
    SELECT row_number() OVER () AS __aef_row,
           -- (an input column named as one added is refused: see aef_sample_points)
           COLUMNS(lambda c: {udf}_input_column(c, to_json({
               'function': 'aef_zonal', 'bands': NULL, 'on_error': on_error,
               'as_vector': false, 'status': status})))
    FROM query_table(__aef_table(polygons_table))
),
options AS MATERIALIZED (
    FROM __aef_options('polygons', 'aef_zonal', years, year, crs, NULL, NULL,
                       geometry_column, NULL, on_error, false, level := level)
),
geometries AS (
    SELECT list(__aef_row ORDER BY __aef_row) AS __aef_rows,
           list(__aef_wkb ORDER BY __aef_row) AS __aef_wkbs,
           list(__aef_text ORDER BY __aef_row) AS __aef_texts,
           list(__aef_type ORDER BY __aef_row) AS __aef_types
    -- (NULL geometries too: the UDF's k-th polygon is then row k, as its messages say.)
    FROM __aef_geometries('polygons', geometry_column)
),
zones AS (
    -- All polygons in one call: each block is then decoded once for all of them.
    SELECT unnest({udf}_zonal(g.__aef_rows, g.__aef_wkbs, g.__aef_texts, g.__aef_types,
                              o.__aef_crs, o.__aef_years, CAST(level AS INTEGER),
                              CAST(on_error AS VARCHAR), CAST(max_bytes AS BIGINT))) AS z
    FROM geometries g CROSS JOIN options o
),
vectors AS (
    SELECT z.row AS __aef_row, z.year AS __aef_year, z.pixels, z.nodata_pixels,
           z.centroid_pixel, z.embedding, z.aef_error,
           -- status := …: left out of a query that does not read it
           {udf}_zonal_status(z.pixels, z.nodata_pixels, z.aef_error, z.year) AS status
    FROM zones
)
SELECT p.* EXCLUDE (__aef_row), y.__aef_year AS year,
       CASE WHEN v.aef_error IS NULL THEN coalesce(v.pixels, 0) END AS pixels,
       CASE WHEN v.aef_error IS NULL THEN coalesce(v.nodata_pixels, 0) END AS nodata_pixels,
       CASE WHEN v.aef_error IS NULL THEN coalesce(v.centroid_pixel, false) END
           AS centroid_pixel,
       COLUMNS(lambda c: c = 'embedding' OR (c = 'aef_error' AND on_error = 'null')
                         OR (c = 'status' AND status))
FROM polygons p
CROSS JOIN (SELECT unnest(__aef_years) AS __aef_year FROM options) y
LEFT JOIN vectors v ON v.__aef_row = p.__aef_row AND v.__aef_year = y.__aef_year
ORDER BY p.__aef_row, y.__aef_year;

-- aef_chips: every row of a points table, once per distinct year, with the `size` x `size`
-- chip centred on its point: `chip` TINYINT[band][row][col], north-up, -128 where there is
-- no data; `chip_crs` and `chip_bounds` (xmin, ymin, xmax, ymax in that CRS); `valid_pixels`
-- (every band holds data) and `embedding FLOAT[64]`, their mean de-quantized embedding (NULL
-- items for bands not asked for; NULL when no pixel is valid). The chip lies on the grid of
-- the tile that holds the point, the point's pixel at row and column size // 2; pixels past
-- the tile's edge come from the tiles of the same grid (its UTM zone), and where none holds
-- them (across a zone seam) from the source pixel under their centre: nearest neighbour,
-- never interpolated. A point in no tile gives NULL chip columns. size is 1 to 2048; the
-- chips of a call may hold `max_bytes` of int8 (default 4 GiB): more is refused before
-- anything is read. `level` k cuts chips from the files' k-th overview. `geometry` 'pixel'
-- adds `geom GEOMETRY('OGC:CRS84')`, the chip's footprint in lon/lat; 'point', the centre of
-- its middle pixel (the point's). status := true adds `status` before `geom` (valid: every
-- pixel of the chip is; nodata: some pixel is not; outside, no_year, error as for
-- aef_sample_points: aefsql/kernels/coverage.py).
CREATE OR REPLACE TEMP MACRO aef_chips(
    points_table,
    size := 64,
    years := NULL,
    year := NULL,
    x_column := 'lon',
    y_column := 'lat',
    geometry_column := NULL,
    crs := NULL,
    bands := NULL,
    level := 0,
    max_bytes := NULL,
    on_error := 'raise',
    status := false,
    geometry := NULL
) AS TABLE
WITH points AS MATERIALIZED (
    SELECT row_number() OVER () AS __aef_row,
           -- (an input column named as one added is refused: see aef_sample_points)
           COLUMNS(lambda c: {udf}_input_column(c, to_json({
               'function': 'aef_chips', 'bands': bands, 'on_error': on_error,
               'as_vector': false, 'status': status, 'geometry': geometry})))
    FROM query_table(__aef_table(points_table))
),
options AS MATERIALIZED (
    FROM __aef_options('points', 'aef_chips', years, year, crs, x_column, y_column,
                       geometry_column, bands, on_error, false, level := level)
),
located AS MATERIALIZED (
    FROM __aef_located('points', 'options', x_column, y_column, geometry_column)
),
planned AS MATERIALIZED (
    SELECT {udf}_chip_plan(count(l.__aef_path), CAST(size AS DOUBLE),
                           CAST(len(any_value(o.__aef_bands)) AS INTEGER),
                           CAST(max_bytes AS BIGINT)) AS p
    FROM located l CROSS JOIN options o
),
checked AS MATERIALIZED (
    SELECT CASE WHEN p.error IS NOT NULL THEN error(p.error) ELSE p.per_call END AS per_call,
           p.period
    FROM planned
),
queue AS (
    -- Tile by tile, so that the chips of one call share their blocks. (The bands travel in
    -- each item: a join after the padding would let DuckDB repack the rows, and a call
    -- then gets more than per_call chips.)
    SELECT list({'row': l.__aef_row, 'year': l.__aef_year, 'path': l.__aef_path,
                 'x': l.__aef_x, 'y': l.__aef_y, 'crs': l.__aef_crs, 'bands': o.__aef_bands}
                ORDER BY l.__aef_path, l.__aef_year, l.__aef_row) AS items
    FROM located l CROSS JOIN options o
    WHERE l.__aef_path IS NOT NULL
),
padded AS (
    -- per_call chips, then NULLs, in every `period` rows: a scalar UDF is handed at most
    -- `period` rows at once, so no call holds more than per_call chips.
    SELECT unnest(list_transform(
               range(CAST(ceil(len(q.items) / c.per_call) AS BIGINT) * c.period),
               lambda i: CASE WHEN i % c.period < c.per_call
                              THEN q.items[(i // c.period) * c.per_call + i % c.period + 1] END
           )) AS item
    FROM queue q CROSS JOIN checked c
),
chips AS (
    SELECT item.row AS __aef_row, item.year AS __aef_year,
           {udf}_chip(item.path, item.year, item.x, item.y, item.crs, item.bands,
                      CAST(size AS INTEGER), CAST(level AS INTEGER),
                      CAST(on_error AS VARCHAR)) AS c
    FROM padded
),
found AS (
    SELECT __aef_row, __aef_year, c.chip, c.chip_crs, c.chip_bounds, c.valid_pixels,
           c.embedding, c.aef_error,
           -- geometry := …: left out of a query that does not read it
           {udf}_chip_geometry(c.chip_crs, c.chip_bounds, CAST(size AS INTEGER),
                               CAST(geometry AS VARCHAR)) AS geom
    FROM chips
    WHERE __aef_row IS NOT NULL
),
chipped AS (
    -- Every located (row, year) with its chip (NULL where its point is in no tile)
    SELECT l.__aef_row, l.__aef_year, f.chip, f.chip_crs, f.chip_bounds, f.valid_pixels,
           f.embedding, f.aef_error,
           -- status := …: left out of a query that does not read it
           {udf}_chip_status(l.__aef_path, f.valid_pixels, CAST(size AS INTEGER), f.aef_error,
                             l.__aef_year) AS status,
           f.geom
    FROM located l
    LEFT JOIN found f ON f.__aef_row = l.__aef_row AND f.__aef_year = l.__aef_year
)
SELECT p.* EXCLUDE (__aef_row), h.__aef_year AS year,
       COLUMNS(lambda c: c IN ('chip', 'chip_crs', 'chip_bounds', 'valid_pixels', 'embedding')
                         OR (c = 'aef_error' AND on_error = 'null')
                         OR (c = 'status' AND status)
                         -- (h's geom: the points' own is refused when geometry is given)
                         OR (c = 'geom' AND {udf}_geometry_wanted(CAST(geometry AS VARCHAR))))
FROM points p
JOIN chipped h ON h.__aef_row = p.__aef_row
ORDER BY p.__aef_row, h.__aef_year;

-- aef_grid: the mean embedding of `area`'s pixels per grid cell, per year: `cell` (VARCHAR:
-- the H3 index as h3 writes it, '872830828ffffff', for cell := 'h3:7'; 'EPSG:32633:262000:
-- 4986000', the cell's CRS and lower-left corner in metres, for square cells of cell := 1000
-- metres on the grid of the pixel's UTM zone), `year`, `pixels` (pixel centres inside the
-- area and the cell), `nodata_pixels` and `embedding FLOAT[64]`, the mean de-quantized
-- embedding of its valid pixels (NULL when none is valid), as aef_zonal computes it over the
-- cell's polygon. A pixel belongs to the cell holding its centre, each location once, from
-- the tile that owns it (its own UTM zone first): across a seam each zone's squares hold the
-- pixels its tiles own. Only cells holding a pixel come back. `area`, `years`, `crs`,
-- `level` and `max_bytes` (pixels x 64 bands x years of int8) as for aef_pixels; each block
-- is read once for all cells. `geometry` 'pixel' adds `geom GEOMETRY('OGC:CRS84')`, the
-- cell's outline in lon/lat; 'point', its centre (aefsql/geometry/footprints.py).
CREATE OR REPLACE TEMP MACRO aef_grid(
    area,
    cell := NULL,
    years := NULL,
    year := NULL,
    crs := NULL,
    level := 0,
    max_bytes := NULL,
    geometry := NULL
) AS TABLE
WITH checked AS MATERIALIZED (
    FROM __aef_area_options('aef_grid', years, year, crs, NULL, level := level)
),
cells AS (
    SELECT unnest({udf}_grid(__aef_area_wkb(area), __aef_area_box(area),
                             __aef_area_text(area), typeof(area), __aef_crs, __aef_years,
                             CAST({band_count} AS INTEGER), CAST(max_bytes AS BIGINT),
                             CAST(level AS INTEGER), CAST(to_json(cell) AS VARCHAR))) AS g
    FROM checked
),
placed AS (
    -- geometry := …: `geom` by a UDF of its own, left out of a query that does not read it.
    SELECT g.cell, g.year, g.pixels, g.nodata_pixels, g.embedding,
           {udf}_grid_geometry(g.cell, CAST(to_json(cell) AS VARCHAR),
                               CAST(geometry AS VARCHAR)) AS geom
    FROM cells
)
SELECT COLUMNS(lambda c: c IN ('cell', 'year', 'pixels', 'nodata_pixels', 'embedding')
                         OR (c = 'geom' AND {udf}_geometry_wanted(CAST(geometry AS VARCHAR))))
FROM placed
ORDER BY placed.cell, placed.year;
