"""Pure geometry: lon/lat and projected coordinates, areas as rings and row spans. No I/O."""
