"""The onnxruntime backend (engine/onnx_export.py, engine/onnx_int8.py): losses against the torch backend, int8
candidates independent of their batch, the export cache, and files that are not this tower's."""

import os
import subprocess
import sys

import onnx
import pytest
import torch

from sharpzo_ext.clip.engine import onnx_export, onnx_int8
from sharpzo_ext.clip.families.hf import Tokenizer
from sharpzo_ext.clip.engine import Engine
from sharpzo_ext.clip.task.prompt_task import PromptTask

from clip_helpers import CLASSES, tiny_clip
from hf_helpers import hf_tokenizer, tiny_hf_clip

G = torch.Generator().manual_seed(0)
W = torch.randn(6, 12, generator=G) * 0.8
FEATURES = torch.nn.functional.normalize(torch.randn(10, 32, generator=G), dim=-1)
LABELS = torch.arange(10) % len(CLASSES)


def refuse(*args):
    raise AssertionError("an export or quantization was written again")


def models():
    return {"open_clip": tiny_clip("vit"), "hf": (tiny_hf_clip(), Tokenizer(hf_tokenizer(), 77))}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module", params=["open_clip", "hf"])
def model(request):
    return models()[request.param]


def task(model, seed=0, device=None, **engine):
    return PromptTask(*model, CLASSES, intrinsic_dim=12, seed=seed, device=device,
                      engine=Engine(**engine))


def features(model):
    """Image features of the model's embedding size."""
    return FEATURES[:, :task(model).text.features(torch.zeros(1, 32)).shape[-1]]


@pytest.mark.slow
@torch.no_grad()
def test_fp32_losses_match_the_torch_backend(model, cache):
    x = features(model)
    expected = task(model).losses(W, x, LABELS)
    onnx_task = task(model, backend="onnxruntime", cache_dir=cache)
    got = onnx_task.losses(W, x, LABELS)
    assert torch.allclose(got, expected, rtol=1e-5)  # the target is 1e-4
    assert onnx_task.text_features(W).shape == (6, len(CLASSES), x.shape[1])


@pytest.mark.slow
@torch.no_grad()
def test_batches_split_pairs_without_changing_losses(model, cache):
    x = features(model)
    whole = task(model, backend="onnxruntime", cache_dir=cache).losses(W, x, LABELS)
    split = task(model, backend="onnxruntime", cache_dir=cache, max_batch_tokens=10)
    assert torch.allclose(split.losses(W, x, LABELS), whole, rtol=1e-6)


@torch.no_grad()
def test_int8_candidates_do_not_depend_on_their_batch(model, cache):
    # Note [Static int8 for ONNX Runtime]: fixed scales, so a far-out neighbour changes nothing
    x = features(model)
    int8 = task(model, backend="onnxruntime", precision="int8", cache_dir=cache)
    alone = int8.losses(W[:1], x, LABELS)
    crowd = torch.cat([W[:1], W[1:] * 100])
    assert torch.allclose(int8.losses(crowd, x, LABELS)[:1], alone, rtol=1e-6, atol=0)
    fp32 = task(model).losses(W, x, LABELS)
    assert torch.allclose(int8.losses(W, x, LABELS), fp32, rtol=0.05)


def test_int8_quantizes_only_products_with_weights(model, cache):
    int8 = task(model, backend="onnxruntime", precision="int8", cache_dir=cache)
    graph = onnx.load(str(int8.encoder.tower.path)).graph
    weights = {i.name for i in graph.initializer}
    products = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    blocks = len(int8.text.blocks)
    # 4 linear layers per block and the projection read dequantized int8 weights; the two
    # attention products per block stay float
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"
                   and n.input[0] in weights}
    assert sum(p.input[1] in dequantized for p in products) == 4 * blocks + 1
    assert sum(p.input[1] not in dequantized for p in products) == 2 * blocks


@pytest.fixture(scope="module")
def exported(cache):
    """The fp32 export of tiny_clip("vit") (seed 0) in the module's cache."""
    return task(tiny_clip("vit"), backend="onnxruntime", cache_dir=cache).encoder.tower.path


def test_exports_are_cached_by_weights(cache, exported, monkeypatch):
    assert exported.parent == cache and exported.name.startswith("text-tower-")
    mtime = exported.stat().st_mtime_ns

    monkeypatch.setattr(onnx_export, "export", refuse)
    again = task(tiny_clip("vit"), backend="onnxruntime", cache_dir=cache)
    assert again.encoder.tower.path == exported and exported.stat().st_mtime_ns == mtime
    digest = onnx_export.weights_digest(again.text)
    assert exported.name == f"text-tower-{digest[:16]}.onnx"
    other = task(tiny_clip("vit", seed=4)).text  # other weights: another name
    assert onnx_export.weights_digest(other) != digest


def test_a_damaged_cached_export_is_exported_again(tmp_path, exported):
    path = tmp_path / exported.name
    path.write_bytes(b"not onnx")
    again = task(tiny_clip("vit"), backend="onnxruntime", cache_dir=tmp_path)
    assert again.encoder.tower.path == path
    assert onnx_export.check_file(path, onnx_export.weights_digest(again.text), 32, "fp32") is None


def test_onnx_file_is_exported_where_named_and_used_again(tmp_path, monkeypatch):
    model = tiny_clip("vit", seed=6)
    named = tmp_path / "sub" / "tower.onnx"
    t = task(model, backend="onnxruntime", onnx_file=named, cache_dir=tmp_path / "cache")
    assert t.encoder.tower.path == named and named.is_file()
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(onnx_export, "export", refuse)
    again = task(model, backend="onnxruntime", onnx_file=named, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        expected = task(model).losses(W, FEATURES, LABELS)
        assert torch.allclose(again.losses(W, FEATURES, LABELS), expected, rtol=1e-5)


def test_a_cached_int8_file_is_not_quantized_again(cache, monkeypatch):
    model = tiny_clip("vit")
    path = task(model, backend="onnxruntime", precision="int8", cache_dir=cache).encoder.tower.path
    assert "-int8-" in path.name
    monkeypatch.setattr(onnx_int8, "quantize", refuse)
    monkeypatch.setattr(onnx_export, "export", refuse)
    again = task(model, backend="onnxruntime", precision="int8", cache_dir=cache)
    assert again.encoder.tower.path == path
    with pytest.raises(AssertionError, match="written again"):  # another seed: calibration
        task(model, backend="onnxruntime", precision="int8", cache_dir=cache, seed=1)


def _listing(directory):
    return sorted((p.name, p.stat().st_mtime_ns) for p in directory.rglob("*"))


@pytest.mark.parametrize("case,message", [
    ("another-model", "exported from another model or other weights"),
    ("other-inputs", "its inputs and outputs are"),
    ("not-onnx", "not an ONNX file onnxruntime can load"),
    ("other-precision", "it is a fp32 export, not int8"),
])
def test_a_named_file_that_is_not_this_towers_is_refused(tmp_path, exported, case, message):
    named = tmp_path / "tower.onnx"
    if case == "not-onnx":
        named.write_bytes(b"\x08\x01garbage")
    else:
        proto = onnx.load(str(exported))
        if case == "other-inputs":  # a valid graph whose first input has another name
            proto.graph.input[0].name = "input_ids"
            for node in proto.graph.node:
                node.input[:] = ["input_ids" if i == "tokens" else i for i in node.input]
        onnx.save(proto, str(named))
    model = tiny_clip("vit", seed=7 if case == "another-model" else 0)
    before = _listing(tmp_path)
    precision = "int8" if case == "other-precision" else "fp32"
    with pytest.raises(ValueError, match=message) as error:
        task(model, backend="onnxruntime", precision=precision, onnx_file=named,
             cache_dir=tmp_path)
    assert "\n" not in str(error.value)
    assert _listing(tmp_path) == before  # nothing written


@pytest.mark.parametrize("kwargs,message", [
    ({"backend": "tensorrt"}, "backend must be one of torch, onnxruntime, got 'tensorrt'"),
    ({"backend": "onnxruntime", "precision": "bf16"}, "runs precision fp32 or int8, not 'bf16'"),
    ({"backend": "onnxruntime", "share_prefix": True}, "cannot share prefixes"),
    ({"backend": "onnxruntime", "device": "cuda"}, "runs on the CPU only"),
    ({"onnx_file": "tower.onnx"}, "onnx_file is for backend 'onnxruntime', not 'torch'"),
])
def test_bad_backend_options_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        task(tiny_clip("vit"), cache_dir=tmp_path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_a_bad_intrinsic_dimension_is_refused_before_export(tmp_path):
    with pytest.raises(ValueError, match="intrinsic_dim must be a positive integer"):
        PromptTask(*tiny_clip("vit"), CLASSES, intrinsic_dim=0,
                   engine=Engine(backend="onnxruntime", cache_dir=tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_text_tower_without_a_causal_mask_is_refused_before_export(tmp_path):
    model, tokenizer = tiny_clip("vit")
    model.attn_mask = None  # bidirectional, like SigLIP's: a cut after the end token is inexact
    with pytest.raises(TypeError, match="causal"):
        PromptTask(model, tokenizer, CLASSES, engine=Engine(backend="onnxruntime",
                   cache_dir=tmp_path))
    assert os.listdir(tmp_path) == []


def test_importing_the_package_imports_no_engine_or_transformers():
    code = ("import sys, sharpzo_ext, sharpzo_ext.clip, sharpzo_ext.clip.task.prompt_task; "
            "print(sorted(m for m in ('transformers', 'onnx', 'onnxscript', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
