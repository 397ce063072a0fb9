"""The module paths of sharpzo_ext 0.1.0, from before clip/ was split into layers. Importing one
(`sharpzo_ext.clip.prompt_task`, say) gives the module at its new path, with a FutureWarning
that names it. These old paths go in the next release."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from sharpzo_ext import deprecated

__all__ = ["MOVED", "install"]

_PACKAGE = "sharpzo_ext.clip"
MOVED = {
    "models": "families", "hf_clip": "families.hf", "hf_preprocess": "families.hf_preprocess",
    "embedded": "families.embedded",
    "text_tower": "engine.tower", "precision": "engine.precision",
    "text_features": "engine.encoders", "onnx_tower": "engine.onnx_export",
    "onnx_int8": "engine.onnx_int8", "backend": "engine.backend",
    "prompt_task": "task.prompt_task", "low_rank": "task.low_rank", "heads": "task.heads",
    "ensemble": "task.ensemble",
    "synthetic": "data.synthetic", "views": "data.views",
    **{name: f"runs.{name}" for name in (
        "config", "methods", "prepare", "train", "run_dir", "evaluate", "compare",
        "compare_report", "confidence", "feature_cache")},
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of MOVED (after the regular finders found nothing there) and loads it
    as the module at its new path."""

    def find_spec(self, name, path, target=None):
        package, _, old = name.rpartition(".")
        if package != _PACKAGE or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        old = spec.name.rpartition(".")[2]
        new = f"{_PACKAGE}.{MOVED[old]}"
        deprecated.warn("sharpzo_ext.clip.<module>", stacklevel=2, module=old, new=new)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        """The module at the new path is imported already."""


def install() -> None:
    if not any(isinstance(finder, _Moved) for finder in sys.meta_path):
        sys.meta_path.append(_Moved())
