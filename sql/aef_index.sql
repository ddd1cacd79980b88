-- aef_index(): the catalog, normalized: fid, year, path (absolute URL), crs, utm_zone,
-- wgs84_west/south/east/north, utm_west/south/east/north, geom (footprint as WKB).
-- {index_select} is filled in at registration from the catalog's own schema; it reads
-- read_parquet(_source), a parameter so that DuckDB does not open the catalog until it is used.
CREATE OR REPLACE TEMP MACRO aef_index(_source := {catalog_url}) AS TABLE
{index_select};
