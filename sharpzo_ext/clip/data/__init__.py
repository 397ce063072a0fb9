"""The images a run tunes on: data sets (datasets.py: the embedded tasks, ImageFolder trees,
CoOp's splits), the procedural shapes they are drawn from (synthetic.py), real handwritten digits
(digits.py), and the augmented views a head averages (views.py).

sharpzo_ext.clip.data was one module in 0.1.0: its names are still offered here, from
datasets.py, with a FutureWarning (Note [Deprecations]: they go in 0.2.0)."""

from __future__ import annotations

__all__: list[str] = []


def __getattr__(name: str):
    import importlib  # noqa: PLC0415

    from sharpzo_ext import deprecated  # noqa: PLC0415

    datasets = importlib.import_module("sharpzo_ext.clip.data.datasets")  # (no from-import:
    # that asks this function for the submodule's name again)
    if name in datasets.__all__:
        deprecated.warn("sharpzo_ext.clip.data.<name>", stacklevel=2, name=name)
        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
