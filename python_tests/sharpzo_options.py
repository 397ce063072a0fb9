"""SharpZO's options written flat (as tables of hyperparameters and 0.1.0's state files have
them) turned into the keywords SharpZO takes: its stages' options as a Warmup and a Search."""

import dataclasses

import sharpzo_ext as sz


def grouped(cls, kwargs: dict) -> dict:
    """kwargs as cls takes them (unchanged for every class but SharpZO)."""
    if cls is not sz.optim.SharpZO:
        return kwargs
    stages = {"warmup": sz.optim.SharpZO.Warmup, "search": sz.optim.SharpZO.Search}
    fields = {key: {f.name for f in dataclasses.fields(c)} for key, c in stages.items()}
    kept = {k: v for k, v in kwargs.items() if not any(k in f for f in fields.values())}
    return kept | {key: c(**{k: v for k, v in kwargs.items() if k in fields[key]})
                   for key, c in stages.items()}
