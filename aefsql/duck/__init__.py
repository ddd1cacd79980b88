"""The DuckDB host: connect/register, the aef_* UDF bodies, their types, the SQL macros."""

from .udfs import connect, register

__all__ = ["connect", "register"]
