"""The catalog: the index's column roles, normalisation and checks, origin policy, tile table."""
