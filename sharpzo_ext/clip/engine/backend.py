"""Which engine runs the text tower (Engine), and the one place that builds it: "torch" (eager;
every precision, shared prefixes by default) or "onnxruntime" (an ONNX export on the CPU,
onnx_export.py and onnx_int8.py; fp32 or int8, full prompts only). PromptTask hands an Engine
its text tower and tokenized prompts and gets back a ready encoder (encoders.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import torch

from sharpzo_ext.clip.engine import onnx_export, onnx_int8
from sharpzo_ext.clip.engine import precision as precision_lib
from sharpzo_ext.clip.engine.encoders import Plain, SharedPrefix, truncated
from sharpzo_ext.clip.engine.tower import TextTower
from sharpzo_ext.files import default_cache_dir, writable_problem

__all__ = ["BACKENDS", "ONNXRUNTIME_PRECISIONS", "Engine", "check"]

BACKENDS = ("torch", "onnxruntime")
ONNXRUNTIME_PRECISIONS = ("fp32", "int8")


def check(backend: str, precision: str, device: torch.device, share_prefix: bool) -> None:
    """Raises ValueError unless `backend` can run the text tower at `precision` on `device`
    (with shared prefixes if `share_prefix`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        precision_lib.check(precision, device)
        return
    if precision not in ONNXRUNTIME_PRECISIONS:
        raise ValueError(f"the onnxruntime backend runs precision fp32 or int8, not {precision!r}")
    if device.type != "cpu":
        raise ValueError(f"the onnxruntime backend runs on the CPU only, not on {device}")
    if share_prefix:
        raise ValueError("the onnxruntime backend cannot share prefixes (its exported graph "
                         "runs whole prompts): use share_prefix=False or None")
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not importlib.util.find_spec(m)]
    if missing:
        raise ValueError(f"the onnxruntime backend needs {', '.join(missing)}: "
                         "pip install 'sharpzo_ext[onnx]'")


@dataclasses.dataclass(frozen=True)
class Engine:
    """How PromptTask runs its text tower.

    Args:
        precision: the text tower's linear layers in "fp32", "bf16" or "int8" (CPU only; torch:
            row-wise scales, Note [Row-wise int8]; onnxruntime: fp32 or int8 with static scales,
            Note [Static int8 for ONNX Runtime]). The model itself is left as it is.
        backend: "torch" (eager), or "onnxruntime": the text tower exported to ONNX and run by
            an onnxruntime session on the CPU (onnx_export.py; no gradients).
        share_prefix: compute the positions all prompts of a candidate share once per candidate
            (exact; Note [Shared prefix]); False runs every prompt in full, to check against.
            None: True on the torch backend, False on onnxruntime (which cannot share them).
        truncate: cut every sequence after the longest prompt's end token (exact: the text
            transformer is causal and pools there; Note [Truncated prompts]). Only for
            ``share_prefix=False``: shared prefixes never compute positions after a prompt's end.
        max_batch_tokens: the memory bound: a batched forward holds about this many tokens
            (the class tokens of the prompts it runs; with shared prefixes, plus their
            candidates' context tokens and at most one prompt more). 8192 keeps a ViT-B/16
            text tower's activations to a few hundred MB; larger batches were no faster on the
            CPU.
        onnx_file: onnxruntime: the exported text tower to run (it must be this model's, at
            this precision), written there first if it does not exist. None: the export cached
            in `cache_dir` (Note [Exported text towers]).
        cache_dir: where exports are cached (default: the feature cache's directory,
            $SHARPZO_EXT_CACHE or ~/.cache/sharpzo_ext).
    """
    precision: str = "fp32"
    backend: str = "torch"
    share_prefix: bool | None = None
    truncate: bool = True
    max_batch_tokens: int = 1 << 13
    onnx_file: str | Path | None = None
    cache_dir: str | Path | None = None

    @property
    def shares_prefix(self) -> bool:
        return self.backend == "torch" if self.share_prefix is None else self.share_prefix

    @property
    def tower_precision(self) -> str:
        """The precision the torch text tower is built at (an onnxruntime export starts from
        the fp32 tower)."""
        return self.precision if self.backend == "torch" else "fp32"

    def check(self, device: torch.device) -> None:
        """Raises ValueError, naming the argument, unless this engine can run on `device`."""
        check(self.backend, self.precision, device, self.shares_prefix)
        if self.onnx_file is not None and self.backend != "onnxruntime":
            raise ValueError(f"onnx_file is for backend 'onnxruntime', not {self.backend!r}")
        if int(self.max_batch_tokens) < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if self.shares_prefix and not self.truncate:
            raise ValueError("truncate=False needs share_prefix=False: shared prefixes never "
                             "compute the positions after a prompt's end token")

    def encoder(self, text: TextTower, tokens: torch.Tensor, n_ctx: int, ctx0: torch.Tensor,
                seed: int):
        """The encoder of the prompts `tokens` (C, L) with n_ctx context tokens: contexts
        (m, n_ctx, width) -> L2-normalized class text features (m, C, E). `ctx0` and `seed`
        calibrate an int8 export."""
        limit = int(self.max_batch_tokens)
        if self.shares_prefix:
            return SharedPrefix(text, tokens, n_ctx, limit)
        if self.backend == "torch":
            return Plain(text, tokens, limit, self.truncate)
        calibration = (onnx_int8.calibration(truncated(text, tokens, self.truncate), ctx0, seed,
                                             limit) if self.precision == "int8" else None)
        session = _onnx_tower(text, self.precision, self.onnx_file,
                              default_cache_dir() if self.cache_dir is None else self.cache_dir,
                              calibration)
        return Plain(session, tokens, limit, self.truncate)


def _onnx_tower(tower: TextTower, precision: str, onnx_file: str | Path | None,
                cache_dir: str | Path, calibration) -> onnx_export.OnnxTower:
    """The session of `tower` at `precision`: the file `onnx_file`, or the cached export (Note
    [Exported text towers]), exported (and for int8 quantized with `calibration`) first where
    it does not exist yet. An int8 file is quantized from the fp32 export, which is cached in
    `cache_dir` whatever `onnx_file` names."""
    digest = onnx_export.weights_digest(tower)
    cache = Path(cache_dir)
    fp32 = cache / f"text-tower-{digest[:16]}.onnx"
    cached = fp32 if precision == "fp32" else (
        cache / f"text-tower-{digest[:16]}-int8-{calibration.key}.onnx")
    target = Path(onnx_file) if onnx_file is not None else cached
    if target.exists():
        tower_session, problem = onnx_export.opened(target, digest, tower.width, precision)
        if problem is None:
            return onnx_export.OnnxTower(target, tower_session, tower)
        if onnx_file is not None:
            raise ValueError(f"onnx_file {target} is not this text tower's {precision} export: "
                             f"{problem}")
    problem = writable_problem(target.parent) or writable_problem(fp32.parent)
    if problem:
        raise ValueError(f"the exported text tower cannot be written: {problem}; pass a writable "
                         "--cache-dir")
    if precision == "fp32":
        onnx_export.export(tower, target, digest)
    else:
        if not fp32.exists() or onnx_export.check_file(fp32, digest, tower.width,
                                                       "fp32") is not None:
            onnx_export.export(tower, fp32, digest)
        onnx_int8.quantize(fp32, target, calibration.feeds())
    return onnx_export.OnnxTower(target, onnx_export.session(target), tower)
