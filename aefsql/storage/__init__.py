"""Storage: byte ranges pinned to an object version, retries, the disk cache. Knows no TIFF."""
