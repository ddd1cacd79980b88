"""Kernels: the block engine and what it reads (points, locate, area pixels, chips, zonal means,
read_area, pictures). Functions of a session; no host (no DuckDB, no Spark, no torch)."""
