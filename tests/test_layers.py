"""The layers of aefsql, read from its source: every import of every module (inside functions
too, relative ones made absolute) against a table of rules, one test per rule. A failure
lists the offending (module, import) pairs. The layers, bottom up: the TIFF/COG format and
pure geometry; storage (byte ranges, versions, retries, disk cache); headers and the
catalog; the kernels (and the session they run on); the hosts over them (DuckDB, the Python
API, the CLI and shell, dbt, Spark, torch, TorchGeo)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aefsql"

HOSTS = (
    "aefsql.duck",
    "aefsql.api",
    "aefsql.cli",
    "aefsql.shell",
    "aefsql.spark",
    "aefsql.torch",
    "aefsql.torchgeo",
    "aefsql.dbt",
)
# The hosts that speak DuckDB: the DuckDB host itself, the Python API (it runs the SQL
# macros), the CLI, the shell, the dbt plugin and Spark (it plans calls through DuckDB).
DUCKDB_HOSTS = (
    "aefsql.duck",
    "aefsql.api",
    "aefsql.cli",
    "aefsql.shell",
    "aefsql.dbt",
    "aefsql.spark",
)
ANY = ("aefsql",)


@dataclass(frozen=True)
class Rule:
    name: str
    modules: tuple  # the modules the rule is about (a name covers its submodules) …
    forbidden: tuple  # … may not import these (aefsql's or third-party)
    except_modules: tuple = ()  # … but these are exempt


RULES = [
    Rule(
        "format-is-pure",
        ("aefsql.format",),
        ("aefsql.storage", "aefsql.catalog", "aefsql.headers", "aefsql.kernels", *HOSTS),
    ),
    Rule(
        "storage-reads-no-format-or-catalog",
        ("aefsql.storage",),
        ("aefsql.format", "aefsql.catalog", "aefsql.headers", "aefsql.kernels", *HOSTS),
    ),
    Rule(
        "geometry-is-pure",
        ("aefsql.geometry",),
        ("aefsql.storage", "aefsql.headers", "aefsql.catalog", "aefsql.kernels", *HOSTS),
    ),
    Rule(
        "headers-and-catalog-below-kernels",
        ("aefsql.headers", "aefsql.catalog"),
        ("aefsql.kernels", *HOSTS),
    ),
    Rule(
        "kernels-and-session-import-no-host",
        ("aefsql.kernels", "aefsql.session"),
        HOSTS,
    ),
    Rule(
        "ml-datasets-import-no-other-host",
        ("aefsql.torch", "aefsql.torchgeo"),
        ("aefsql.duck", "aefsql.api", "aefsql.cli", "aefsql.shell", "aefsql.spark", "aefsql.dbt"),
    ),
    Rule(
        "only-storage-and-fsspec-shims-import-fsspec",
        ANY,
        ("fsspec", "aiohttp", "s3fs"),
        except_modules=("aefsql.storage", "aefsql.duck.filesystems"),
    ),
    Rule(
        "only-hosts-import-duckdb",
        ANY,
        ("duckdb",),
        except_modules=DUCKDB_HOSTS,
    ),
]


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    """{module name: (its source tree, whether it is a package)} of every aefsql module."""
    return {
        module_name(p): (ast.parse(p.read_text(), str(p)), p.name == "__init__.py")
        for p in sorted(PACKAGE.rglob("*.py"))
    }


MODULES = modules()


def absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name of the module a `from … import` reads from."""
    if not node.level:
        return node.module
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imported(module: str, is_package: bool, nodes, known=MODULES) -> list:
    """The absolute names `module` imports in `nodes`: `from a import b` gives a.b where that
    is one of the `known` modules, else a."""
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, is_package, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                names.append(sub if sub in known else source)
    return names


def all_imports(module: str, known=MODULES) -> list:
    """Every import of `module`, wherever it stands (functions, TYPE_CHECKING blocks)."""
    tree, is_package = known[module]
    return imported(module, is_package, ast.walk(tree), known)


def load_time_imports(module: str, known=MODULES) -> list:
    """The imports that run when `module` is imported: not those in function bodies, nor
    under `if TYPE_CHECKING:`."""
    tree, is_package = known[module]
    nodes, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        nodes.append(node)
        todo += ast.iter_child_nodes(node)
    return imported(module, is_package, nodes, known)


def breaches(rule: Rule, known=MODULES) -> list:
    """The (module, import) pairs of the `known` modules that break `rule`."""
    return sorted(
        {
            (module, name)
            for module in known
            if within(module, rule.modules) and not within(module, rule.except_modules)
            for name in all_imports(module, known)
            if within(name, rule.forbidden)
        }
    )


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_layering_rule(rule):
    found = breaches(rule)
    assert not found, "\n".join(f"{module} imports {name}" for module, name in found)


def test_rules_name_modules_that_exist():
    """A rule about a module that is gone (renamed, moved) would hold for nothing."""
    named = {
        name
        for rule in RULES
        for name in (*rule.modules, *rule.except_modules, *rule.forbidden)
        if name.startswith("aefsql")
    }
    missing = {n for n in named if not any(within(m, (n,)) for m in MODULES)}
    assert missing == set()


def cycle(known=MODULES) -> list:
    """One cycle of load-time imports among the `known` modules, or []."""
    graph = {
        m: sorted({n for n in load_time_imports(m, known) if n in known and n != m}) for m in known
    }
    state, path = {}, []  # state: 1 on the current path, 2 done

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return []

    for m in graph:
        if m not in state and (found := visit(m)):
            return found
    return []


def test_no_import_cycle():
    assert cycle() == []


def test_a_cycle_is_found_but_not_through_a_function():
    def parsed(source):
        return ast.parse(source), False

    known = {
        "aefsql.a": parsed("from . import b\n"),
        "aefsql.b": parsed("from .c import x\n"),
        "aefsql.c": parsed("from .a import y\n"),
    }
    assert cycle(known) == ["aefsql.a", "aefsql.b", "aefsql.c", "aefsql.a"]
    known["aefsql.c"] = parsed("def f():\n    from .a import y\n")
    assert cycle(known) == []


# -- the reader itself, on made-up modules -------------------------------------------------


def test_relative_imports_resolve_to_absolute_names():
    tree = ast.parse(
        "from .fetch import Version\nfrom .. import options\nfrom ..storage import ranges\n"
        "def f():\n    import fsspec\n"
    )
    names = imported("aefsql.format.tiff", False, ast.walk(tree))
    assert names == ["aefsql.format.fetch", "aefsql.options", "aefsql.storage.ranges", "fsspec"]
    package = ast.parse("from .udfs import connect\n")
    assert imported("aefsql.duck", True, ast.walk(package)) == ["aefsql.duck.udfs"]


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_each_rule_catches_a_breach(rule):
    """Each rule, shown failing: a made-up module under it importing, inside a function, what
    it forbids."""
    module = next(
        m for m in MODULES if within(m, rule.modules) and not within(m, rule.except_modules)
    )
    forbidden = rule.forbidden[0]
    planted = ast.parse(f"def f():\n    import {forbidden}\n")
    assert breaches(rule, {module: (planted, False)}) == [(module, forbidden)]


def test_importing_aefsql_builds_no_arrow_array():
    """`import aefsql` makes no Arrow array: pyarrow imports pandas (when installed) at its
    first `pa.array`, which took a third of the import's time and 37 MiB of a CLI or worker
    process that never needed it (a module-level array of status words did)."""
    import subprocess
    import sys

    code = "import sys, aefsql; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
