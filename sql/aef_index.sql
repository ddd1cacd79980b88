-- aef_index(): the catalog, normalized: fid, year, path (absolute URL), crs, utm_zone,
-- wgs84_west/south/east/north, utm_west/south/east/north, geom (footprint, GEOMETRY in
-- lon/lat). The catalog is read on first use, not at registration: {udf}_index_file() gives
-- the normalized copy (aefsql/catalog/index.py writes it), and DuckDB folds that call when it binds.
CREATE OR REPLACE TEMP MACRO aef_index() AS TABLE
SELECT * REPLACE (CAST(ST_GeomFromWKB(geom) AS GEOMETRY('OGC:CRS84')) AS geom)
FROM read_parquet({udf}_index_file(0));
