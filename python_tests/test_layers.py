"""The package's layering as a checked contract, over the import graph of its source (every
import, at module level or inside a function): no import circles (so nothing that the package
root imports imports the root), clip/'s layers import only downward and, outside clip/, only
the optimizers, the ops and the helpers, and only the model families import a CLIP library."""

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


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `path` imports (a name imported from a package is the
    submodule if there is one, else the package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.startswith("sharpzo_ext")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module or "").startswith("sharpzo_ext"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                out.add(name if name in modules else node.module)
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
    allowed = {"sharpzo_ext.optim", "sharpzo_ext.ops", "sharpzo_ext.checks", "sharpzo_ext.files",
               "sharpzo_ext.loaded",
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


def test_the_optimizers_load_no_clip_module():
    # `import sharpzo_ext` (or sharpzo_ext.optim) leaves the CLIP layer unloaded until it is used
    code = ("import sys, sharpzo_ext as sz, sharpzo_ext.optim\n"
            "assert not [m for m in sys.modules if m.startswith('sharpzo_ext.clip')], "
            "sorted(m for m in sys.modules if m.startswith('sharpzo_ext.clip'))\n"
            "assert sz.clip.PromptTask.__name__ == 'PromptTask'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
