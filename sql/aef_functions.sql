-- The Python UDFs under their public names. Each registration creates its UDFs under a fresh
-- prefix ({udf}) because UDFs belong to the database instance while these macros belong to one
-- connection: two connections with different catalogs each call their own.

-- The embedding at (lon, lat) read from one COG; NULL outside the raster; nodata bands NULL.
CREATE OR REPLACE TEMP MACRO aef_sample(path, lon, lat) AS {udf}_sample(path, lon, lat);

-- The path of the tile of `year` whose raster contains (lon, lat), own UTM zone first; or NULL.
CREATE OR REPLACE TEMP MACRO aef_locate(lon, lat, year) AS {udf}_locate(lon, lat, year);

-- aef_sample(aef_locate(lon, lat, year), lon, lat) in one call.
CREATE OR REPLACE TEMP MACRO aef_embedding(lon, lat, year) AS {udf}_embedding(lon, lat, year);

-- Write the parsed headers of the catalog's files (of `years`, default all) to a Parquet
-- file: a read-ready collection for connect(collection=…). Returns the number of files.
CREATE OR REPLACE TEMP MACRO aef_build_collection(output, years := NULL) AS
    {udf}_build_collection(output, CAST(years AS INTEGER[]));
