"""The TIFF/COG format: pure functions over bytes (header parsing, block decoding). No I/O."""
