"""The module paths of 0.1.0 (clip/moved.py): each old path gives the module at its new path,
with a FutureWarning that names it; a name that never existed still fails. (sharpzo_ext.clip.data,
once a module, is the data package, which offers the module's names.)"""

import importlib
import sys

import pytest

from sharpzo_ext.clip import moved


@pytest.mark.parametrize("old", sorted(moved.MOVED))
def test_an_old_path_is_the_new_module(old):
    sys.modules.pop(f"sharpzo_ext.clip.{old}", None)
    new = importlib.import_module(f"sharpzo_ext.clip.{moved.MOVED[old]}")
    with pytest.warns(FutureWarning, match=f"use sharpzo_ext.clip.{moved.MOVED[old]} instead"):
        assert importlib.import_module(f"sharpzo_ext.clip.{old}") is new


def test_old_from_imports_keep_working():
    sys.modules.pop("sharpzo_ext.clip.prompt_task", None)
    with pytest.warns(FutureWarning):
        from sharpzo_ext.clip.prompt_task import PromptTask  # noqa: PLC0415
    from sharpzo_ext.clip.task.prompt_task import PromptTask as new  # noqa: PLC0415
    assert PromptTask is new


def test_an_unknown_path_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("sharpzo_ext.clip.no_such_module")


def test_the_data_package_offers_the_old_data_modules_names():
    from sharpzo_ext.clip import data  # noqa: PLC0415
    from sharpzo_ext.clip.data import datasets  # noqa: PLC0415

    for name in datasets.__all__:
        with pytest.warns(FutureWarning, match=f"use sharpzo_ext.clip.data.datasets.{name} "):
            assert getattr(data, name) is getattr(datasets, name)
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018
