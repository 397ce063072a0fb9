"""The deprecation table (sharpzo_ext/deprecated.py, Note [Deprecations]): every deprecated
surface warns from it, naming what replaces it and its removal release, and each is gone by
that release."""

import pytest

import sharpzo_ext
from sharpzo_ext.deprecated import DEPRECATED


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_a_deprecated_surface_is_removed_by_its_release(old):
    # fails on the release that removes it: remove the surface and its row then
    assert version(sharpzo_ext.__version__) < version(DEPRECATED[old].removed_in), (
        f"{old} was to be removed in {DEPRECATED[old].removed_in}")


def test_every_surface_warns_from_the_table():
    import importlib
    import sys

    import torch

    from sharpzo_ext.clip import data
    from sharpzo_ext.clip.runs import train

    sys.modules.pop("sharpzo_ext.clip.heads", None)
    cases = [
        (lambda: importlib.import_module("sharpzo_ext.clip.heads"),
         "sharpzo_ext.clip.heads is deprecated: use sharpzo_ext.clip.task.heads instead"),
        (lambda: train.evaluate_prompt, "use sharpzo_ext.clip.runs.evaluate.evaluate_prompt"),
        (lambda: data.Dataset, "use sharpzo_ext.clip.data.datasets.Dataset instead"),
        (lambda: sharpzo_ext.optim.SharpZO([torch.nn.Parameter(torch.zeros(4))],
                                           cma_options={"diagonal": True}),
         r"SharpZO\(cma_options=...\) is deprecated"),
        (lambda: sharpzo_ext.optim.SharpZO([torch.nn.Parameter(torch.zeros(4))],
                                           sparse_options={"refresh": 2}),
         r"SharpZO\(sparse_options=...\) is deprecated"),
        (lambda: sharpzo_ext.optim.SharpZO([torch.nn.Parameter(torch.zeros(4))], refresh=2),
         r"SharpZO\(refresh=...\) is deprecated: use "
         r"SharpZO\(search=SharpZO.Search\(refresh=...\)\)"),
    ]
    assert len(cases) == len(DEPRECATED)
    for call, match in cases:
        with pytest.warns(FutureWarning, match=match) as caught:
            call()
        assert "removed in sharpzo_ext 0.2.0" in str(caught[0].message)
