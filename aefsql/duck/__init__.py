"""The DuckDB host: aef_* functions in SQL over the kernels.

types.py (the UDFs' result types), udfs.py (their bodies over a session), registration.py
(creating them and the macros of sql/ on a connection: `connect`, `register`), calls.py (the
SQL text of a call, for every host), filesystems.py (fsspec filesystems for DuckDB's own
readers)."""

from .registration import connect, register

__all__ = ["connect", "register"]
