"""bench --suite clip-realsize at its quick size (ViT-B-16's text tower, 10 classes): the records
docs/clip.md's real-size table is made of, checked against counts known in advance."""

import pytest

from sharpzo_ext.bench import clip_realsize
from sharpzo_ext.bench.common import BenchConfig
from sharpzo_ext.clip.engine import precision

pytest.importorskip("open_clip")

# ViT-B-16's text tower: 12 layers of width 512 with an MLP of 2048; per token, 2 flops per
# multiply-add of q, k, v, the attention's output projection and the two MLP layers
VIT_B_16_LINEAR_FLOPS_PER_TOKEN = 2 * 12 * (4 * 512 * 512 + 2 * 512 * 2048)


@pytest.fixture(scope="module")
def suite():
    return clip_realsize.run(BenchConfig(quick=True))


@pytest.mark.slow
def test_each_path_counts_the_token_positions_it_runs(suite):
    # the first 10 ImageNet classes, context of 4: full prompts cut at the longest (10 tokens)
    # run 10 x 10 positions; shared prefixes run the context once and each class's suffix
    tokens = {r["path"]: r["tokens_per_candidate"] for r in suite.records}
    assert tokens["full prompts, fp32"] == 100
    assert {n for p, n in tokens.items() if p.startswith("shared prefix")} == {41}


def test_gflops_count_the_linear_layers_of_vit_b_16(suite):
    for r in suite.records:
        flops = r["gflops"] * 1e9 * r["ms_per_candidate"] / 1e3 / r["tokens_per_candidate"]
        assert flops == pytest.approx(VIT_B_16_LINEAR_FLOPS_PER_TOKEN, rel=1e-9), r["path"]
        assert r["projected_run_s"] == pytest.approx(r["ms_per_candidate"] * 20)


def test_rows_name_their_precision_bound_and_int8_weight_range(suite):
    paths = [r["path"] for r in suite.records]
    int8 = precision.runs("int8", "cpu")
    assert len(paths) == (5 if int8 else 3)
    bounds = {r["path"]: r["max_batch_tokens"] for r in suite.records}
    assert set(bounds.values()) == ({8192, clip_realsize.SMALL_BOUND} if int8 else {8192})
    for r in suite.records:
        assert r["int8_weight_max"] == (precision.int8_weight_max() if int8 else None)
    if int8:
        assert f"int8 weights in [-{precision.int8_weight_max()}," in suite.table
    assert [t.name for t in suite.targets][0] == "shared prefix fp32 vs full prompts, 10 classes"
