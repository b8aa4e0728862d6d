"""The house's structure, written down once and enforced: lyricdist's imports (module-level and inside functions)
only point down the layers below, and no module imports itself back through others.

The layers follow the data: scraping and corpora at the bottom, then training, generation, similarity (it scores
generated songs), the commands, and the dispatcher on top. A module may import modules of its own layer or any
layer below; a new module must be placed here (the test names it) before it can be imported by anything.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "lyricdist"

# Top first. A pattern matches module names (fnmatch); "lyricdist" alone is the package's face.
LAYERS: list[tuple[str, ...]] = [
    ("lyricdist", "lyricdist.cli", "lyricdist.__main__"),  # the package's face (LyricsModel) and the dispatcher
    ("lyricdist.demo", "lyricdist.app"),  # built from other commands
    ("lyricdist.push", "lyricdist.plot", "lyricdist.pretrained", "lyricdist.prepare", "lyricdist.genius.cli",
     "lyricdist.similarity"),  # commands (similarity's package face is its command)
    ("lyricdist.similarity.*",),  # trains siamese models and scores songs, generated ones too
    ("lyricdist.sample", "lyricdist.collab"),  # generation commands
    ("lyricdist.train", "lyricdist.transfer"),  # the char-RNN's trainer
    ("lyricdist.loop", "lyricdist.memorization", "lyricdist.generate"),  # the one loop; generation primitives
    ("lyricdist.run", "lyricdist.divergence"),  # run plumbing
    ("lyricdist.state", "lyricdist.tracking", "lyricdist.checkpoint", "lyricdist.data", "lyricdist.config",
     "lyricdist.sources", "lyricdist.sources.*", "lyricdist.genius", "lyricdist.genius.*"),
    ("lyricdist.model", "lyricdist.curves", "lyricdist.refs", "lyricdist.vocab", "lyricdist.corpus_format"),
    ("lyricdist.precision", "lyricdist.options", "lyricdist.fileio", "lyricdist.errors", "lyricdist.version"),
]


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every module of the package at `package`."""
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def internal_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every lyricdist module `name` imports, anywhere in the file (inside functions too). `from X import y`
    counts as importing X.y when that is a module, else X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in known else base_name for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "lyricdist" or t.startswith("lyricdist."))
    return found - {name}


def layer_of(name: str) -> int:
    """The layer's index, counted from the top; the most specific (longest) matching pattern wins."""
    best = None
    for i, patterns in enumerate(LAYERS):
        for pattern in patterns:
            if fnmatch(name, pattern) and (best is None or len(pattern) > len(best[1])):
                best = (i, pattern)
    if best is None:
        raise AssertionError(f"{name} is in no layer: place it in tests/test_layers.py LAYERS")
    return best[0]


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: internal_imports(name, path, set(found)) for name, path in found.items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_only_point_down():
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)}, above it)"
              for a, targets in sorted(graph().items()) for b in sorted(targets) if layer_of(b) < layer_of(a)]
    assert not upward, "imports that climb a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    edges = graph()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_check_sees_function_level_imports_and_catches_an_upward_one(tmp_path):
    """The checker itself: an import inside a function of a low module, pointing at a command, is an edge."""
    fake = tmp_path / "lyricdist"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "errors.py").write_text("def f():\n    from .sample import sample\n")
    (fake / "sample.py").write_text("from . import errors\n")
    edges = graph(fake)
    assert edges["lyricdist.errors"] == {"lyricdist.sample"} and edges["lyricdist.sample"] == {"lyricdist.errors"}
    assert layer_of("lyricdist.sample") < layer_of("lyricdist.errors")  # upward: test_imports_only_point_down fails
