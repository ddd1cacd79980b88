"""COG headers: read ahead beside the parser, or from a headers file (aefsql's, Rasteret's)."""
