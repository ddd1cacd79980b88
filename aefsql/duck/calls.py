"""SQL text built in one place for every host (the CLI, the shell, the Python API, Spark): a
call of an aef_* function, its values as literals and names as identifiers, each by one quoting
rule, so a user's string can never become SQL."""

from __future__ import annotations

from numbers import Integral


def sql_literal(value) -> str:
    """`value` as an SQL literal: a string quoted (its quotes doubled), a list or tuple `[…]`, None
    NULL, a bool `true`/`false`, an integer as written."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(sql_literal, value)) + "]"
    raise TypeError(f"no SQL literal for {type(value).__name__}: {value!r}")


def sql_identifier(name: str) -> str:
    """`name` as a quoted SQL identifier (its quotes doubled): any column name, keywords too."""
    return '"' + name.replace('"', '""') + '"'


def table_call(function: str, /, *arguments, **parameters) -> str:
    """`function(a, b, key := c, …)`: the positional `arguments` and the named `parameters` as
    literals, in the order given. A named parameter given None is left out, so the
    function's own default applies; a positional None is NULL."""
    given = [sql_literal(value) for value in arguments]
    given += [
        f"{key} := {sql_literal(value)}" for key, value in parameters.items() if value is not None
    ]
    return f"{function}({', '.join(given)})"
