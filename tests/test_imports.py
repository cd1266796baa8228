"""The package's modules import each other without a circle (issue: one core).

Read from the source (every ``import``/``from ... import``, also inside
functions, since a lazy import only hides a circle; not those under ``if
TYPE_CHECKING:``, which never run), so it fails before a circle can bite.  Importing a submodule runs its package's
``__init__`` first, so that counts as an import of the package too - except
for the packages the importing module is itself in, which are running already.
"""
import ast
import os

import justaprocess

PKG_DIR = os.path.dirname(justaprocess.__file__)


def modules() -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(PKG_DIR):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), os.path.dirname(PKG_DIR))[:-3]
                name = rel.replace(os.sep, ".").removesuffix(".__init__")
                out[name] = os.path.join(d, f)
    return out


def imports(name: str, path: str, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (and their parent packages)."""
    here = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    found = set()
    tree = ast.parse(open(path).read(), path)
    typing_only = set()  # `if TYPE_CHECKING:` imports never run
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here[:len(here) - node.level + 1] + ([base] if base else [])
                base = ".".join(parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c runs a/__init__ and a/b/__init__ first,
                m = ".".join(parts[:i])         # except the packages this module is in (running)
                if m in known and m != name and m not in ancestors:
                    found.add(m)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_the_imports():
    g = graph()
    assert {"justaprocess._registry", "justaprocess.cgroups"} <= g["justaprocess.lab"]
    assert "justaprocess.errors" in g["justaprocess._registry"]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    found = cycles(graph())
    assert not found, f"modules that import each other (directly or around a circle): {found}"


def test_the_registry_is_below_everything():
    """_registry imports only errors, proc and the syscall layer: every module that makes
    objects can use it."""
    g = graph()
    assert g["justaprocess._registry"] <= {"justaprocess.errors", "justaprocess.proc", "justaprocess._libc"}
    cg = {m for m in g if m == "justaprocess.cgroups" or m.startswith("justaprocess.cgroups.")}
    assert not any("justaprocess.lab" in g[m] for m in cg)
    assert g["justaprocess.cgroups.tree"] >= {"justaprocess.cgroups.files", "justaprocess._registry"}
