"""The package's layering as a checked contract, over the import graph of its source (every
import, absolute or relative, at module level or inside a function): no import circles (so
nothing that the package root imports imports the root), clip/'s layers import only downward
and, outside clip/, only the optimizers, the ops and the helpers, only the model families import
a CLIP library, nothing imports the command line, only it imports the benchmarks, and the core
(the optimizers, the ops and their helpers) imports none of clip/, bench/ or cli.py."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sharpzo_ext

ROOT = Path(sharpzo_ext.__file__).parent
# clip/'s layers, highest first: each imports only from the layers after it
CLIP_LAYERS = ("runs", "task", "families", "engine", "data")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ROOT.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path], source: str | None = None) -> set[str]:
    """The package's modules that `path` imports, absolutely or relatively (a name imported
    from a package is the submodule if there is one, else the package)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.startswith("sharpzo_ext")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..y import z: relative to the package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            if base.startswith("sharpzo_ext"):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    out.add(full if full in modules else base)
    return out & set(modules)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_imports(graph):  # the checks below rest on it
    assert "sharpzo_ext.clip.engine.tower" in graph["sharpzo_ext.clip.families.openclip"]
    assert "sharpzo_ext.optim" in graph["sharpzo_ext.clip.runs.methods"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_are_resolved():
    modules = _modules()
    path = ROOT / "clip" / "task" / "ensemble.py"
    source = "from . import heads\nfrom ..engine import tower\nfrom .features import Features\n"
    assert _imports(path, modules, source) == {"sharpzo_ext.clip.task.heads",
                                                "sharpzo_ext.clip.engine.tower",
                                                "sharpzo_ext.clip.task.features"}


def test_there_are_no_import_circles(graph):
    cycle = _cycle(graph)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) >= 3 and parts[1] == "clip" and parts[2] in CLIP_LAYERS else None


def test_clip_layers_import_only_downward(graph):
    upward = []
    for module, imported in graph.items():
        mine = _layer(module)
        if mine is None:
            continue
        for other in imported:
            theirs = _layer(other)
            if other.startswith("sharpzo_ext.clip") and (
                    theirs is None or CLIP_LAYERS.index(theirs) < CLIP_LAYERS.index(mine)):
                upward.append(f"{module} imports {other}")
    assert not upward, "imports that run up clip/'s layers:\n" + "\n".join(sorted(upward))


def test_clip_imports_only_the_optimizers_and_helpers_outside_it(graph):
    allowed = {"sharpzo_ext.optim", "sharpzo_ext.ops", "sharpzo_ext.files",
               "sharpzo_ext.loaded", "sharpzo_ext.deprecated", "sharpzo_ext.errors",
               "sharpzo_ext.distributed", "sharpzo_ext.resident_memory", "sharpzo_ext.machine"}
    outside = sorted(f"{module} imports {other}" for module, imported in graph.items()
                     if module.startswith("sharpzo_ext.clip") for other in imported
                     if not other.startswith("sharpzo_ext.clip")
                     and not any(other == a or other.startswith(a + ".") for a in allowed))
    assert not outside, "\n".join(outside)


def test_only_the_families_import_a_clip_library():
    libraries = ("open_clip", "transformers", "huggingface_hub")
    found = []
    for name, path in _modules().items():
        if name.startswith("sharpzo_ext.clip") and not name.startswith(
                "sharpzo_ext.clip.families"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{name} imports {n}" for n in names if n.split(".")[0] in libraries]
    assert not found, "\n".join(found)


def _in_fresh_python(code: str) -> None:
    """Runs `code` in a new interpreter (nothing imported yet); fails with its stderr."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_package_imports_no_optional_library():
    # transformers, accelerate and peft are optional: only the modules that use them import
    # them (sharpzo_ext.integrations.transformers, the Hugging Face CLIP family)
    _in_fresh_python("import sys, sharpzo_ext, sharpzo_ext.optim, sharpzo_ext.integrations\n"
                     "loaded = [m for m in sys.modules if m.split('.')[0] in ('transformers', "
                     "'accelerate', 'peft')]\n"
                     "assert not loaded, loaded\n")


def test_the_optimizers_load_no_clip_module():
    # `import sharpzo_ext` (or sharpzo_ext.optim) leaves the CLIP layer unloaded until it is used
    code = ("import sys, sharpzo_ext as sz, sharpzo_ext.optim\n"
            "assert not [m for m in sys.modules if m.startswith('sharpzo_ext.clip')], "
            "sorted(m for m in sys.modules if m.startswith('sharpzo_ext.clip'))\n"
            "assert sz.clip.PromptTask.__name__ == 'PromptTask'\n")
    _in_fresh_python(code)


# the package's edges: the command line on top, the benchmarks below it, and the core (what
# `import sharpzo_ext.optim` needs) below everything
CORE = ("sharpzo_ext.optim", "sharpzo_ext.ops", "sharpzo_ext.loaded", "sharpzo_ext.deprecated",
        "sharpzo_ext.files", "sharpzo_ext.distributed", "sharpzo_ext.machine",
        "sharpzo_ext.resident_memory", "sharpzo_ext.errors")


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_nothing_imports_the_command_line_and_only_it_imports_the_benchmarks(graph):
    wrong = sorted(f"{module} imports {other}" for module, imported in graph.items()
                   for other in imported
                   if (other == "sharpzo_ext.cli" and module != "sharpzo_ext.__main__")
                   or (_within(other, ("sharpzo_ext.bench",)) and not _within(
                       module, ("sharpzo_ext.bench", "sharpzo_ext.cli"))))
    assert not wrong, "\n".join(wrong)


def test_the_core_imports_neither_clip_nor_the_benchmarks_nor_the_command_line(graph):
    wrong = sorted(f"{module} imports {other}" for module, imported in graph.items()
                   if _within(module, CORE) for other in imported
                   if _within(other, ("sharpzo_ext.clip", "sharpzo_ext.bench", "sharpzo_ext.cli")))
    assert not wrong, "\n".join(wrong)


def test_the_bench_command_line_loads_no_clip_module():
    # Note [Sub-commands built on demand]: `bench` builds its own options only
    code = ("import sys\nfrom sharpzo_ext.cli import build_parser\n"
            "args = build_parser('bench').parse_args(['bench', '--quick'])\n"
            "assert args.command == 'bench'\n"
            "assert not [m for m in sys.modules if m.startswith('sharpzo_ext.clip')], "
            "sorted(m for m in sys.modules if m.startswith('sharpzo_ext.clip'))\n")
    _in_fresh_python(code)
