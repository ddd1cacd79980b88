-- The Python UDFs under their public names. Each registration creates its UDFs under a fresh
-- prefix ({udf}) because UDFs belong to the database instance while these macros belong to one
-- connection: two connections with different catalogs each call their own.

-- The embedding at (lon, lat) read from one COG; NULL outside the raster; nodata bands NULL.
CREATE OR REPLACE TEMP MACRO aef_sample(path, lon, lat) AS
    {udf}_sample(path, CAST(lon AS DOUBLE), CAST(lat AS DOUBLE));

-- The path of the tile of `year` whose raster contains (lon, lat), own UTM zone first; or NULL.
CREATE OR REPLACE TEMP MACRO aef_locate(lon, lat, year) AS
    {udf}_locate(CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(year AS DOUBLE), 4326);

-- The CRS of a point GEOMETRY as an EPSG code: DuckDB's GEOMETRY type names one only when
-- asked to (GEOMETRY('OGC:CRS84')); none means lon/lat.
CREATE OR REPLACE TEMP MACRO __aef_geometry_epsg(geom) AS
    CASE WHEN ST_CRS(geom) IS NULL OR ST_CRS(geom) IN ('OGC:CRS84', 'EPSG:4326') THEN 4326
         ELSE error('aef_embedding(geom, year) takes lon/lat points; this one is in '
                    || ST_CRS(geom) || ': use aef_sample_points(…, crs := …)') END;

-- aef_sample(aef_locate(lon, lat, year), lon, lat) in one call; or the same at a point
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

-- The size x size embeddings around (lon, lat) in one COG, a list read row by row from north
-- to south and west to east (the point's own pixel at row and column size // 2). NULL when the
-- point is outside the raster; pixels outside it are NULL items. size is 1 to 2048, and one
-- call's patches (up to 2,048 rows) at most 4 GiB of int8, as for aef_chips: more is refused
-- before anything is read.
CREATE OR REPLACE TEMP MACRO aef_sample_patch(path, lon, lat, size := 3) AS
    {udf}_sample_patch(path, CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(size AS INTEGER));

-- aef_sample_patch(aef_locate(lon, lat, year), lon, lat, size): the patch from the tile that
-- holds the point (pixels beyond that tile's edge are NULL, not read from its neighbour).
CREATE OR REPLACE TEMP MACRO aef_patch(lon, lat, year, size := 3) AS
    {udf}_sample_patch(
        aef_locate(lon, lat, year), CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(size AS INTEGER)
    );

-- Write the parsed headers of the catalog's files (of `years`, one or a list, default all)
-- to a Parquet file: a read-ready collection for connect(collection=…). Returns the number of
-- files.
CREATE OR REPLACE TEMP MACRO aef_build_collection(output, years := NULL, year := NULL) AS
    {udf}_build_collection(output, to_json({'years': years, 'year': year}));
