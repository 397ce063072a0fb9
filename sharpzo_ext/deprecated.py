"""The package's deprecated surfaces: one table, each with what replaces it and the release that
removes it.

Note [Deprecations]
An old name keeps working until its removal release, with a FutureWarning that names what
replaces it and that release; the warning is written here, once, from the table.
python_tests/test_deprecated.py fails once the package's version reaches an entry's removal
release, so that the surface is removed then and not forgotten.
"""

from __future__ import annotations

import dataclasses
import warnings

__all__ = ["Deprecated", "DEPRECATED", "warn"]


@dataclasses.dataclass(frozen=True)
class Deprecated:
    old: str         # what a user writes ("<...>" where the caller names it)
    new: str         # what to write instead
    removed_in: str  # the release without it


DEPRECATED = {d.old: d for d in (
    Deprecated("sharpzo_ext.clip.<module>", "<new>", "0.2.0"),  # 0.1.0's paths: clip/moved.py
    Deprecated("sharpzo_ext.clip.runs.train.evaluate_prompt",
               "sharpzo_ext.clip.runs.evaluate.evaluate_prompt", "0.2.0"),
    Deprecated("sharpzo_ext.clip.data.<name>", "sharpzo_ext.clip.data.datasets.<name>", "0.2.0"),
    Deprecated("SharpZO(cma_options=...)",
               "SharpZO's keywords and SharpZO(warmup=SharpZO.Warmup(...))", "0.2.0"),
    Deprecated("SharpZO(sparse_options=...)",
               "SharpZO's keywords and SharpZO(search=SharpZO.Search(...))", "0.2.0"),
    Deprecated("SharpZO(<name>=...)", "SharpZO(<group>=SharpZO.<Group>(<name>=...))", "0.2.0"),
)}


def warn(old: str, stacklevel: int = 2, **names: str) -> None:
    """The FutureWarning of DEPRECATED[old], with each "<name>" of its text replaced by
    names[name], raised `stacklevel` frames above the caller (2: the caller's caller)."""
    entry = DEPRECATED[old]
    shown = {"old": entry.old, "new": entry.new}
    for key, value in names.items():
        shown = {k: v.replace(f"<{key}>", value) for k, v in shown.items()}
    warnings.warn(f"{shown['old']} is deprecated: use {shown['new']} instead (it is removed in "
                  f"sharpzo_ext {entry.removed_in})", FutureWarning, stacklevel=stacklevel + 1)
