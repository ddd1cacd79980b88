-- The Python UDFs under their public names. Each registration creates its UDFs under a fresh
-- prefix ({udf}) because UDFs belong to the database instance while these macros belong to one
-- connection: two connections with different catalogs each call their own.

-- The embedding at (lon, lat) read from one file (path, as aef_locate gives it): NULL outside
-- its raster; nodata bands NULL. aef_embedding(lon, lat, year) finds the file itself.
CREATE OR REPLACE TEMP MACRO aef_file_embedding(path, lon, lat) AS
    {udf}_file_embedding(path, CAST(lon AS DOUBLE), CAST(lat AS DOUBLE));

-- Deprecated (removed in 0.2): the old name of aef_file_embedding(path, lon, lat).
CREATE OR REPLACE TEMP MACRO aef_sample(path, lon, lat) AS
    aef_file_embedding(path, lon, lat);

-- The path of the tile of `year` whose raster contains (lon, lat), own UTM zone first; or NULL.
CREATE OR REPLACE TEMP MACRO aef_locate(lon, lat, year) AS
    {udf}_locate(CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(year AS DOUBLE), 4326);

-- The CRS of a point GEOMETRY as an EPSG code: DuckDB's GEOMETRY type names one only when
-- asked to (GEOMETRY('OGC:CRS84')); none means lon/lat.
CREATE OR REPLACE TEMP MACRO __aef_geometry_epsg(geom) AS
    CASE WHEN ST_CRS(geom) IS NULL OR ST_CRS(geom) IN ('OGC:CRS84', 'EPSG:4326') THEN 4326
         ELSE error('aef_embedding(geom, year) takes lon/lat points; this one is in '
                    || ST_CRS(geom) || ': use aef_sample_points(…, crs := …)') END;

-- aef_file_embedding(aef_locate(lon, lat, year), lon, lat) in one call; or the same at a point
-- GEOMETRY (or WKB BLOB) in lon/lat: aef_embedding(geom, year).
CREATE OR REPLACE TEMP MACRO aef_embedding(lon, lat, year) AS
    {udf}_embedding(CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(year AS DOUBLE), 4326),
    (geom, year) AS
    {udf}_embedding(
        {udf}_point_xy(ST_AsWKB(CAST(geom AS GEOMETRY))).x,
        {udf}_point_xy(ST_AsWKB(CAST(geom AS GEOMETRY))).y,
        CAST(year AS DOUBLE),
        __aef_geometry_epsg(CAST(geom AS GEOMETRY))
    );

-- The parsed headers of the catalog's files (of `years`, one or a list, default all), one row
-- per file: write them to a headers file with COPY (FROM aef_headers()) TO 'headers.parquet',
-- then connect(headers=…) samples without reading any COG header.
CREATE OR REPLACE TEMP MACRO aef_headers(years := NULL, year := NULL) AS TABLE
    SELECT unnest(h)
    FROM (SELECT unnest({udf}_headers(to_json({'years': years, 'year': year}))) AS h);

-- Deprecated (removed in 0.2): COPY (FROM aef_headers(years := …)) TO output instead. Writes
-- the headers file at `output`; returns the number of files.
CREATE OR REPLACE TEMP MACRO aef_build_collection(output, years := NULL, year := NULL) AS
    {udf}_build_collection(output, to_json({'years': years, 'year': year}));
