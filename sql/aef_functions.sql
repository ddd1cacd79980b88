-- The Python UDFs under their public names. Each registration creates its UDFs under a fresh
-- prefix ({udf}) because UDFs belong to the database instance while these macros belong to one
-- connection: two connections with different catalogs each call their own.

-- The embedding at (lon, lat) read from one COG; NULL outside the raster; nodata bands NULL.
CREATE OR REPLACE TEMP MACRO aef_sample(path, lon, lat) AS
    {udf}_sample(path, CAST(lon AS DOUBLE), CAST(lat AS DOUBLE));

-- The path of the tile of `year` whose raster contains (lon, lat), own UTM zone first; or NULL.
CREATE OR REPLACE TEMP MACRO aef_locate(lon, lat, year) AS
    {udf}_locate(CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(year AS INTEGER));

-- aef_sample(aef_locate(lon, lat, year), lon, lat) in one call.
CREATE OR REPLACE TEMP MACRO aef_embedding(lon, lat, year) AS
    {udf}_embedding(CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(year AS INTEGER));

-- The size x size embeddings around (lon, lat) in one COG, a list read row by row from north
-- to south and west to east (the point's own pixel at row and column size // 2). NULL when the
-- point is outside the raster; pixels outside it are NULL items. size is 1 to 64 (a 64 x 64
-- patch is 256 KiB a row): a larger one is refused before anything is read.
CREATE OR REPLACE TEMP MACRO aef_sample_patch(path, lon, lat, size := 3) AS
    {udf}_sample_patch(path, CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(size AS INTEGER));

-- aef_sample_patch(aef_locate(lon, lat, year), lon, lat, size): the patch from the tile that
-- holds the point (pixels beyond that tile's edge are NULL, not read from its neighbour).
CREATE OR REPLACE TEMP MACRO aef_patch(lon, lat, year, size := 3) AS
    {udf}_sample_patch(
        aef_locate(lon, lat, year), CAST(lon AS DOUBLE), CAST(lat AS DOUBLE), CAST(size AS INTEGER)
    );

-- Write the parsed headers of the catalog's files (of `years`, default all) to a Parquet
-- file: a read-ready collection for connect(collection=…). Returns the number of files.
CREATE OR REPLACE TEMP MACRO aef_build_collection(output, years := NULL) AS
    {udf}_build_collection(output, CAST(years AS INTEGER[]));
