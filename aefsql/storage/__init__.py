"""Storage: byte ranges pinned to an object version, retries, caches in memory and on disk.
Imports no TIFF format, catalog or kernel."""
