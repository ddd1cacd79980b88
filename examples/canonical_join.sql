-- The canonical join: a table of places x the AEF catalog -> the 64 embedding bands.
-- Run it in the aefsql shell or any DuckDB connection where aefsql is registered, with a
-- `points` table (lon, lat, and whatever else) in scope.
SELECT p.*, i.fid, unnest(aef_file_embedding(i.path, p.lon, p.lat))
FROM points p
LEFT JOIN aef_index() i
  ON i.year = 2024 AND i.path = aef_locate(p.lon, p.lat, 2024)
ORDER BY ALL;
