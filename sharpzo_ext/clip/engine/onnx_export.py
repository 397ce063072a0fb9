"""The text tower on ONNX Runtime: TextTower.prompt_features exported by torch's ONNX exporter,
run by an onnxruntime.InferenceSession on the CPU execution provider (backend.py finds or
writes the file).

The exported graph maps `tokens` (B, L) int64 and `context` (B, n_ctx, width) float32 to
L2-normalized `features` (B, E), for any B, L and n_ctx: one file per model and weights, whatever
the task. Files are cached as text-tower-<digest>.onnx, the digest being that of the tower's
weights and structure (Note [Exported text towers]); the int8 variant (onnx_int8.py) adds the
digest of its calibration.

Note [Exported text towers]
A file is used only if it is of this tower: its metadata holds the digest of the weights and
structure it was exported from, and its inputs and output must have the names and the width
above. A cached file that fails the check (damaged, or written by another version) is exported
again; a file the caller named is refused instead, since replacing it would destroy their file.
Exports are written to a temporary name and renamed, so a crash leaves no half-written file.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from sharpzo_ext.clip.engine.tower import TextTower
from sharpzo_ext.files import atomic_path

__all__ = ["OnnxTower", "weights_digest", "export", "save_variant", "check_file", "opened",
           "session", "INPUTS", "OUTPUTS"]

INPUTS, OUTPUTS = ["tokens", "context"], ["features"]
FORMAT = "1"  # bumped when the exported graph changes
_DIGEST_KEY, _PRECISION_KEY, _FORMAT_KEY = ("sharpzo_ext.text_tower", "sharpzo_ext.precision",
                                            "sharpzo_ext.format")


_LINEARS, _MODULES = ("qkv", "out", "fc", "proj"), ("ln_1", "ls_1", "ln_2", "act", "ls_2")


def weights_digest(tower: TextTower) -> str:
    """sha256 of an fp32 tower's weights and of what else decides its outputs (pooling, heads,
    activations, layer norms' epsilon)."""
    if tower.precision != "fp32":
        raise ValueError(f"only an fp32 text tower is exported, not {tower.precision}")
    modules = [tower.token_embedding, tower.ln_final]
    tensors = [tower.positional_embedding]
    for block in tower.blocks:
        modules += [getattr(block, name) for name in _MODULES]
        for name in _LINEARS:  # precision.py's fp32 linear layers: their weight and bias
            tensors += [t for t in (getattr(block, name).weight, getattr(block, name).bias)
                        if t is not None]
    if isinstance(tower.projection, torch.nn.Module):
        modules.append(tower.projection)
    elif tower.projection is not None:
        tensors.append(tower.projection)
    h = hashlib.sha256(f"pool {tower.pool_type} {tower.eos_id}; ".encode())
    h.update(" ".join(f"{type(m).__name__} {getattr(m, 'eps', '')} {getattr(m, 'heads', '')}"
                      for m in modules).encode())
    h.update(" ".join(str(block.heads) for block in tower.blocks).encode())
    for t in tensors + [t for m in modules for t in m.state_dict().values()]:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


class _Exported(torch.nn.Module):
    def __init__(self, tower: TextTower):
        super().__init__()
        self.tower = tower

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.tower.prompt_features(tokens, context)


def _set_metadata(model, values: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


def export(tower: TextTower, path: Path, digest: str) -> None:
    """Exports an fp32 tower's prompt_features to `path` (atomically), with its digest."""
    if tower.precision != "fp32":
        raise ValueError(f"only an fp32 text tower is exported, not {tower.precision}")
    tokens = torch.zeros(2, 8, dtype=torch.long)
    tokens[:, -1] = tower.eos_id if tower.pool_type == "eos" else 1
    context = torch.zeros(2, 2, tower.width)
    length = tower.positional_embedding.shape[0]
    pairs = torch.export.Dim("pairs")
    dims = {"tokens": {0: pairs, 1: torch.export.Dim("length", max=length)},
            "context": {0: pairs, 1: torch.export.Dim("n_ctx", max=length - 2)}}
    with torch.no_grad(), warnings.catch_warnings():
        # both inputs' first axis is "pairs", which the exporter reports as a rename it skips
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
        program = torch.onnx.export(_Exported(tower).eval(), (tokens, context), dynamo=True,
                                    input_names=INPUTS, output_names=OUTPUTS,
                                    dynamic_shapes=dims, optimize=True, verbose=False)
    save(program.model_proto, path, {_DIGEST_KEY: digest, _PRECISION_KEY: "fp32",
                                     _FORMAT_KEY: FORMAT})


def save_variant(model, source, path: Path, precision: str) -> None:
    """Writes `model`, derived from the export `source` (onnx_int8's), as that export's variant
    at `precision`."""
    save(model, path, {**{p.key: p.value for p in source.metadata_props},
                       _PRECISION_KEY: precision})


def save(model, path: Path, metadata: dict[str, str]) -> None:
    """Writes an ONNX model with `metadata` (atomically, in one file)."""
    import onnx  # noqa: PLC0415

    _set_metadata(model, metadata)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))


def session(path: Path):
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def opened(path: Path, digest: str, width: int, precision: str):
    """(the session of `path`, None) if it is this tower's export at `precision` (Note
    [Exported text towers]), else (None, why not)."""
    try:
        loaded = session(path)
    except Exception as error:  # noqa: BLE001 (onnxruntime's load errors have no common base)
        first = (str(error) or type(error).__name__).splitlines()[0]
        return None, f"it is not an ONNX file onnxruntime can load ({first})"
    inputs = [i.name for i in loaded.get_inputs()]
    outputs = [o.name for o in loaded.get_outputs()]
    meta = loaded.get_modelmeta().custom_metadata_map
    if inputs != INPUTS or outputs != OUTPUTS:
        problem = f"its inputs and outputs are {inputs} -> {outputs}, not {INPUTS} -> {OUTPUTS}"
    elif meta.get(_FORMAT_KEY) != FORMAT:
        problem = "it was not exported by this version of sharpzo_ext"
    elif meta.get(_DIGEST_KEY) != digest:
        problem = "it was exported from another model or other weights"
    elif meta.get(_PRECISION_KEY) != precision:
        problem = f"it is a {meta.get(_PRECISION_KEY)} export, not {precision}"
    elif loaded.get_inputs()[1].shape[2:] != [width]:
        problem = f"its context is not (pairs, n_ctx, {width})"
    else:
        return loaded, None
    return None, problem


def check_file(path: Path, digest: str, width: int, precision: str) -> str | None:
    """Why the ONNX file at `path` is not this tower's export at `precision`, or None."""
    return opened(path, digest, width, precision)[1]


class OnnxTower:
    """An exported text tower run by onnxruntime on the CPU, with TextTower's interface to
    encoders.Plain: pool_index and prompt_features (no gradients)."""

    def __init__(self, path: Path, session, tower: TextTower):
        self.path, self.session, self.tower = path, session, tower
        self.pool_index = tower.pool_index

    def prompt_features(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """TextTower.prompt_features, computed by the session."""
        feed = {"tokens": tokens.detach().cpu().numpy().astype(np.int64, copy=False),
                "context": context.detach().cpu().float().contiguous().numpy()}
        features, = self.session.run(OUTPUTS, feed)
        return torch.from_numpy(features).to(context.device)
