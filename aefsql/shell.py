"""The aefsql shell: DuckDB's CLI habits on a connection with every aef_* function registered."""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import os
import re
import sys
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb

from .duck.calls import sql_identifier, sql_literal
from .duck.registration import function_docs
from .errors import AefsqlError, redact_text

MODES = ("box", "table", "csv", "json", "markdown", "line")
STREAMED_MODES = ("csv", "json")  # written as the rows come: no width to measure first
STREAM_ROWS = 10_000
RESULT_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "SHOW", "DESCRIBE", "SUMMARIZE"}
HISTORY = Path(os.environ.get("AEFSQL_HISTORY", Path.home() / ".aefsql_history"))
MAX_READ_DEPTH = 16  # .read inside .read: deeper than this is a file that reads itself

HELP = """\
.catalog [URL]         show the AEF catalog, or switch to another one
.functions             list the aef_* functions with their signatures
.help                  this list
.maxrows N             rows shown in box mode (default 40)
.mode MODE             box, table, csv, json, markdown or line
.output [FILE]         send results to FILE, or back to the screen
.quit                  leave (also Ctrl-D)
.read FILE             run the SQL and dot-commands in FILE
.schema [TABLE]        the CREATE statements of tables and views
.tables                list tables and views
.timer on|off          print how long each statement took
Statements end with ';'. Ctrl-C cancels the running query; Ctrl-D leaves."""


class Shell:
    """Runs SQL and dot-commands on one connection, rendering results like DuckDB's CLI.

    `bail`: stop a script (and every .read in it) at its first error, like `duckdb -bail`:
    for -c, -f and piped input; at the prompt the shell goes on after an error.
    """

    def __init__(
        self,
        con,
        *,
        session=None,
        reconnect=None,
        out=None,
        err=None,
        debug: bool = False,
        bail: bool = False,
    ):
        self.con = con
        self.session = session  # the aefsql session to cancel on Ctrl-C
        self.reconnect = reconnect  # catalog URL -> the new session registered on this con
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.debug = debug
        self.bail = bail
        self._reading: list[str] = []  # the files of the .read commands running now
        self.mode = "box"
        self.max_rows = 40
        self.timer = False
        self.output_file = None
        self.buffer = ""
        self.failed = False
        # DuckDB runs on one worker thread, so that the main thread stays free for Ctrl-C.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aefsql-shell")

    # -- input --------------------------------------------------------------------------

    def feed(self, line: str) -> bool:
        """Take one line of input; False when the shell should stop."""
        if not self.buffer.strip() and line.strip().startswith("."):
            try:
                return self.dot(line.strip())
            except KeyboardInterrupt:
                self._complain("Interrupted")
            except Exception as exc:  # noqa: BLE001 (one line, and the session lives on)
                self._fail(exc)
            return True
        self.buffer += line + "\n"
        if _ends_statement(self.buffer):
            text, self.buffer = self.buffer, ""
            self.run(text)
        return True

    def run_script(self, text: str) -> None:
        for line in text.splitlines():
            if not self.feed(line) or (self.bail and self.failed):
                return
        if self.buffer.strip():
            text, self.buffer = self.buffer, ""
            self.run(text)

    @property
    def prompt(self) -> str:
        return "   ...> " if self.buffer.strip() else "aefsql> "

    # -- SQL ----------------------------------------------------------------------------

    def run(self, sql: str) -> None:
        """Run every statement in `sql`; an error prints one line and stops the rest."""
        try:
            statements = self._call(self.con.extract_statements, sql)
            for statement in statements:
                query = _strip_terminator(statement.query)
                started = time.perf_counter()
                text = None
                # The functions' Python warnings (a year the catalog lacks), one line each
                # after the result, as DuckDB's CLI prints its own.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        if statement.type.name in RESULT_TYPES:
                            text = self._call(self._render, query, statement.type.name)
                        else:
                            self._call(self.con.execute, query)
                    finally:
                        # The progress line (stderr) ends before the result or error prints.
                        self._end_progress()
                if text is not None:
                    self._emit(text)
                for message in dict.fromkeys(str(w.message) for w in caught if _said(w)):
                    print(f"Warning: {message}", file=self.err)
                if self.timer:
                    self._say(f"Run Time: {time.perf_counter() - started:.3f} s")
        except KeyboardInterrupt:
            self._complain("Interrupted")
        except Exception as exc:  # noqa: BLE001 (one line, and the session lives on)
            self._fail(exc, sql)

    def _call(self, fn, *args):
        """Run fn on the worker thread; Ctrl-C interrupts DuckDB and waits for it to stop."""
        future = self._worker.submit(fn, *args)
        try:
            return future.result()
        except KeyboardInterrupt:
            # DuckDB stops between chunks; aefsql abandons its reads, those in flight too.
            self.con.interrupt()
            if self.session is not None:
                self.session.cancel()
            with contextlib.suppress(Exception):
                future.result(timeout=30)
            if self.session is not None:
                self.session.resume()
            raise

    def _render(self, query: str, kind: str = "SELECT") -> str | None:
        """The result as text; in csv and json modes, written as it comes instead (None): a
        result of millions of rows is never held whole."""
        names, shown = None, query
        if self.mode != "box" and kind == "SELECT":  # binds the query, runs nothing
            relation = self.con.sql(query)
            names = list(relation.columns)
            shown = displayed_query(query, relation.types, as_text=self.mode != "json")
        if self.mode in STREAMED_MODES:
            result = self.con.execute(shown)  # a result that fetches batch by batch
            names = names or [column[0] for column in result.description]
            first = True
            for piece in streamed_rows(self.mode, names, result):
                if first:  # the progress line (stderr) ends before the result prints
                    self._end_progress()
                    first = False
                (self.output_file or self.out).write(piece)
            return None
        relation = self.con.sql(shown)
        if self.mode == "box":
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                relation.show(max_rows=self.max_rows)
            return text.getvalue().rstrip("\n")
        return render_rows(self.mode, names or list(relation.columns), relation.fetchall())

    # -- dot-commands -------------------------------------------------------------------

    def dot(self, line: str) -> bool:
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        if command in (".quit", ".exit"):
            return False
        handlers = {
            ".help": lambda: self._say(HELP),
            ".tables": lambda: self.run(
                "SELECT table_name AS name FROM duckdb_tables() "
                "UNION SELECT view_name FROM duckdb_views() "
                "WHERE NOT internal ORDER BY name;"
            ),
            ".schema": lambda: self._schema(argument),
            ".read": lambda: self.read_file(argument),
            ".mode": lambda: self._set_mode(argument),
            ".output": lambda: self._set_output(argument),
            ".timer": lambda: self._set_timer(argument),
            ".maxrows": lambda: self._set_max_rows(argument),
            ".catalog": lambda: self._catalog(argument),
            ".functions": lambda: self._say(functions_text(self.con)),
        }
        handler = handlers.get(command)
        if handler is None:
            self._complain(f"unknown command {command}: try .help")
        else:
            handler()
        return True

    def _schema(self, table: str) -> None:
        only = f" WHERE name = {sql_literal(table)}" if table else ""
        self.run(
            "SELECT sql FROM (SELECT table_name AS name, sql FROM duckdb_tables() UNION ALL "
            f"SELECT view_name, sql FROM duckdb_views() WHERE NOT internal){only};"
        )

    def read_file(self, path: str) -> None:
        """Run the SQL and dot-commands in the file at `path` (.read, -f)."""
        if len(self._reading) >= MAX_READ_DEPTH:
            self._complain(
                f".read {path}: more than {MAX_READ_DEPTH} nested .read (does a file read itself?)"
            )
            return
        try:
            text = Path(path).read_text()
        except OSError as exc:
            self._complain(f"cannot read {path}: {exc.strerror or exc}")
            return
        except UnicodeDecodeError:
            self._complain(f"cannot read {path}: not a text file (not UTF-8)")
            return
        self._reading.append(path)
        try:
            self.run_script(text)
        finally:
            self._reading.pop()

    def _set_mode(self, mode: str) -> None:
        if mode not in MODES:
            self._complain(f".mode {mode!r}: one of {', '.join(MODES)}")
        else:
            self.mode = mode

    def _set_output(self, path: str) -> None:
        if self.output_file is not None:
            self.output_file.close()
            self.output_file = None
        if not path:
            return
        try:
            self.output_file = open(path, "w")  # noqa: SIM115 (kept open until .output)
        except OSError as exc:
            self._complain(f".output {path}: {exc.strerror or exc}; results go to the screen")

    def _set_timer(self, value: str) -> None:
        if value not in ("on", "off"):
            self._complain(".timer on|off")
        else:
            self.timer = value == "on"

    def _set_max_rows(self, value: str) -> None:
        if not value.isdigit():
            self._complain(".maxrows N")
        else:
            self.max_rows = int(value)

    def _catalog(self, url: str) -> None:
        if not url:
            self.run(
                "SELECT count(*) AS tiles, min(year) AS first_year, max(year) AS last_year, "
                "any_value(path) AS example_path FROM aef_index();"
            )
            return
        self.session = self._call(self.reconnect, url)
        self._say(f"catalog: {url}")

    # -- output -------------------------------------------------------------------------

    def _emit(self, text: str) -> None:
        print(text, file=self.output_file or self.out)

    def _say(self, text: str) -> None:
        print(text, file=self.out)

    def _complain(self, text: str) -> None:
        self.failed = True
        print(f"Error: {text}", file=self.err)

    def _fail(self, exc: Exception, sql: str | None = None) -> None:
        self._complain(error_text(exc, sql))
        if self.debug:
            traceback.print_exception(exc, file=self.err)

    def _end_progress(self) -> None:
        if self.session is not None:
            self.session.engine.progress.close()

    def close(self) -> None:
        self._set_output("")
        self._worker.shutdown(wait=False, cancel_futures=True)

    # -- the interactive loop -----------------------------------------------------------

    def interact(self) -> None:
        _load_history()
        print(
            'aefsql: AlphaEarth embeddings in DuckDB. Enter ".help" for usage hints.', file=self.out
        )
        while True:
            try:
                line = input(self.prompt)
            except EOFError:
                print(file=self.out)
                break
            except KeyboardInterrupt:  # at the prompt: drop the unfinished statement
                print("^C", file=self.out)
                self.buffer = ""
                continue
            if not self.feed(line):
                break
        _save_history()


def displayed_query(query: str, types, *, as_text: bool) -> str:
    """`query` wrapped so that its values print as DuckDB prints them.

    `as_text` (csv, line, markdown, table): every value as DuckDB's own text of it (its
    VARCHAR cast), nested ones too. Otherwise (json, whose numbers stay numbers): each FLOAT,
    nested too, as the DOUBLE of DuckDB's text of it. Python knows no float32: 0.1359::FLOAT
    arrives as the double 0.13590000569820404, and its repr carries that noise into the
    output; DuckDB's text of a FLOAT read back as a DOUBLE prints as that same text (Python's
    repr of a DOUBLE is DuckDB's).
    """
    columns = []
    for position, column_type in enumerate(types, start=1):
        column = f"#{position}"
        if as_text:
            column = f"CAST({column} AS VARCHAR)"
        elif (as_double := _sql_type(column_type, "DOUBLE")) is not None:
            as_varchar = _sql_type(column_type, "VARCHAR")
            column = f"CAST(CAST({column} AS {as_varchar}) AS {as_double})"
        columns.append(column)
    if all(column.startswith("#") for column in columns):
        return query
    # The query may end in a -- comment: it gets a line of its own.
    return f"SELECT {', '.join(columns)} FROM (\n{query}\n) AS aefsql_shown"


def _sql_type(column_type, float_as: str) -> str | None:
    """The SQL type of `column_type` with every FLOAT as `float_as`; None when it holds none."""
    kind = column_type.id
    if kind == "float":
        return float_as
    if kind in ("list", "array"):
        child = column_type.children[0][1]
        inner = _sql_type(child, float_as)
        if inner is None:
            return None
        return f"{inner}[]" if kind == "list" else f"{inner}[{column_type.children[1][1]}]"
    if kind in ("struct", "union", "map"):
        children = column_type.children[1:] if kind == "union" else column_type.children
        inner = [_sql_type(child, float_as) for _, child in children]
        if all(t is None for t in inner):
            return None
        types = [t or str(child) for t, (_, child) in zip(inner, children, strict=True)]
        if kind == "map":
            return f"MAP({types[0]}, {types[1]})"
        fields = ", ".join(
            f"{sql_identifier(name)} {t}" for (name, _), t in zip(children, types, strict=True)
        )
        return f"{kind.upper()}({fields})"
    return None


def streamed_rows(mode: str, names: list[str], result):
    """csv or json text of a query's result, piece by piece (STREAM_ROWS rows at a time), the same
    text `render_rows` gives, with its final newline."""
    if mode == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(names)
        while rows := result.fetchmany(STREAM_ROWS):
            writer.writerows(rows)
            yield text.getvalue()
            text.seek(0)
            text.truncate()
        yield text.getvalue()
        return
    yield "["
    separator = ""
    while rows := result.fetchmany(STREAM_ROWS):
        for row in rows:
            yield separator + json.dumps(dict(zip(names, row, strict=True)), default=str)
            separator = ", "
    yield "]\n"


def render_rows(mode: str, names: list[str], rows: list[tuple]) -> str:
    """Rows as csv, json, markdown, line or table text."""
    if mode == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return text.getvalue().rstrip("\n")
    if mode == "json":
        return json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str)
    cells = [[_cell(v) for v in row] for row in rows]
    if mode == "line":
        width = max(map(len, names), default=0)
        return "\n\n".join(
            "\n".join(f"{n.rjust(width)} = {v}" for n, v in zip(names, row, strict=True))
            for row in cells
        )
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    if mode == "markdown":
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([_row(names, widths), rule, *(_row(r, widths) for r in cells)])
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    return "\n".join(
        [border, _row(names, widths), border, *(_row(r, widths) for r in cells), border]
    )


def _row(values: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"


def functions_text(con) -> str:
    """Every aef_* function: its signature, then the first line of its documentation."""
    rows = con.execute(
        "SELECT DISTINCT function_name, parameters FROM duckdb_functions() "
        "WHERE function_name LIKE 'aef%' ORDER BY function_name"
    ).fetchall()
    docs = function_docs()
    return "\n".join(
        f"{name}({', '.join(parameters)})\n    {docs.get(name, '')}" for name, parameters in rows
    )


def _cell(value) -> str:
    return "NULL" if value is None else str(value)


def _ends_statement(text: str) -> bool:
    """True when the last token of `text` (comments aside) is a ';'."""
    tokens = [(pos, kind) for pos, kind in duckdb.tokenize(text) if kind.name != "COMMENT"]
    if not tokens:
        return False
    pos, _ = tokens[-1]
    return text[pos:].lstrip().startswith(";")


def _strip_terminator(query: str) -> str:
    """DuckDB 2.0 keeps a statement's ';' and any comment after it: drop both."""
    tokens = [(pos, kind) for pos, kind in duckdb.tokenize(query) if kind.name != "COMMENT"]
    if tokens and query[tokens[-1][0] :].lstrip().startswith(";"):
        return query[: tokens[-1][0]].rstrip()
    return query.rstrip()


_TRACEBACK = "Traceback (most recent call last):"
_UDF_FAILED = "Python exception occurred while executing the UDF: "
_HINTS = ("Did you mean", "Candidate bindings")


# DuckDB's table macros take names, not subqueries (aef_sample_points((SELECT …)) fails).
SUBQUERY_ADVICE = (
    "aef_* table functions take a table, view or CTE name, not a subquery: "
    "WITH p AS (SELECT …) SELECT * FROM aef_sample_points('p', …)"
)


def _own_error_names(classes=(AefsqlError,)) -> set[str]:
    """The names of AefsqlError and of every class under it."""
    return {c.__name__ for c in classes} | {
        name for c in classes for name in _own_error_names(tuple(c.__subclasses__()))
    }


_NO_BINDING = re.compile(r"Macro (\w+)\(\) does not support the supplied arguments")


def _arguments_hint(head: str, lines: list[str], sql: str | None) -> str | None:
    """For DuckDB's "Macro f() does not support the supplied arguments" (a misspelt or
    extra argument): the name `sql` gives f that f has no parameter of, the one it likely
    meant, and f's parameters (DuckDB lists them under "Candidate macros")."""
    found = _NO_BINDING.search(head)
    if not found:
        return None
    macro = found.group(1)
    signature = next((x.strip() for x in lines if x.strip().startswith(macro + "(")), None)
    if signature is None:
        return None
    params = [p.split(":=")[0].strip() for p in signature[len(macro) + 1 : -1].split(",")]
    unknown = [name for name in _named_arguments(sql or "", macro) if name not in params]
    if not unknown:
        return f"{head.split('. ')[0]}: it takes {signature}"
    named = []
    for name in dict.fromkeys(unknown):
        close = difflib.get_close_matches(name, params, n=1)
        named.append(f"{name} (did you mean {close[0]}?)" if close else name)
    plural = "s" if len(named) > 1 else ""
    return f"{macro}() has no parameter{plural} {', '.join(named)}; it takes {', '.join(params)}"


def _named_arguments(sql: str, macro: str) -> list[str]:
    """The `name :=` arguments of each call of `macro` in `sql`: its own, not those of a
    call inside it, nor anything inside a string literal or quoted name."""
    names = []
    for call in re.finditer(rf"\b{re.escape(macro)}\s*\(", sql, re.IGNORECASE):
        depth, at, own = 1, call.end(), []
        while at < len(sql) and depth:
            quoted = re.match(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", sql[at:])
            named = re.match(r"(\w+)\s*:=", sql[at:]) if depth == 1 else None
            if quoted:
                at += quoted.end()
                continue
            if named and not re.match(r"\w", sql[at - 1 : at]):
                own.append(named.group(1))
                at += named.end()
                continue
            depth += {"(": 1, ")": -1}.get(sql[at], 0)
            at += 1
        names += own
    return names


def _said(caught: warnings.WarningMessage) -> bool:
    """A warning the shell prints: one of aefsql's own (a UserWarning from its code), not a
    library's (numpy's RuntimeWarnings, deprecations)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    return issubclass(caught.category, UserWarning) and caught.filename.startswith(package)


def error_text(exc: BaseException, sql: str | None = None) -> str:
    """What the user needs of an error: its cause on one line, never a Python traceback;
    then, for a parser error, DuckDB's `LINE n: …` and the caret under the culprit. `sql`
    (what was run) lets a misspelt argument of a macro be named."""
    lines = str(exc).strip().splitlines()
    head = lines[0] if lines else ""
    tracebacks = [i for i, line in enumerate(lines) if _TRACEBACK in line]
    if tracebacks:
        # DuckDB quotes a Python exception raised in a registered filesystem (and, in some
        # versions, a UDF) with its traceback: the exception's own line follows the frames.
        start = tracebacks[-1]
        cause = next((x for x in lines[start + 1 :] if x and not x[0].isspace()), "")
        head = lines[start].split(_TRACEBACK)[0] + cause
    # "Invalid Input Error: Python exception occurred while executing the UDF: X: why" -> "X: why",
    # and "why" alone when X is aefsql's own error (a refusal says its reason, as DuckDB's do).
    head = head.split(_UDF_FAILED)[-1].strip()
    named = re.match(r"(\w+): ", head)
    if named and named.group(1) in _own_error_names():
        head = head[named.end() :]
    if not isinstance(exc, duckdb.Error | AefsqlError):  # unexpected: its type says what broke
        head = f"{type(exc).__name__}: {head}"
    head = head.rstrip(": ") or type(exc).__name__
    head = _arguments_hint(head, lines, sql) or " ".join(
        [head, *(x for x in lines[1:] if x.startswith(_HINTS))]
    )
    if "Table function cannot contain subqueries" in head:
        head += f" ({SUBQUERY_ADVICE})"
    context = []
    for i, line in enumerate(lines):
        if re.match(r"LINE \d+: ", line):
            context = lines[i : i + 2]
    # DuckDB's own messages quote URLs as given (a presigned one with its signature).
    return redact_text("\n".join([head, *context]))


def _load_history() -> None:
    try:
        import readline

        readline.read_history_file(HISTORY)
    except (ImportError, OSError):
        pass


def _save_history() -> None:
    try:
        import readline

        readline.set_history_length(5000)
        readline.write_history_file(HISTORY)
    except (ImportError, OSError):
        pass
