"""bench --suite adapter-realsize at its quick size (ViT-B-16's widths, 10 classes): its rows,
records and target, against what they must be."""

import pytest

from sharpzo_ext.bench import adapter_realsize
from sharpzo_ext.bench.common import BenchConfig
from sharpzo_ext.clip.task.adapter import DEFAULT_DIM

pytest.importorskip("open_clip")


@pytest.mark.slow
def test_each_tuned_thing_is_a_row_and_the_target_is_their_ratio():
    suite = adapter_realsize.run(BenchConfig(quick=True))
    rows = {r["tuned"]: r for r in suite.records}
    prompt = rows["prompt (text tower, shared prefixes, fp32)"]
    adapter = rows[f"image-side adapter (d = {DEFAULT_DIM})"]
    joint = rows["prompt + adapter, one vector"]
    assert (prompt["dim"], adapter["dim"], joint["dim"]) == (512, DEFAULT_DIM, 512 + DEFAULT_DIM)
    assert {r["images"] for r in suite.records} == {10 * adapter_realsize.SHOTS}
    (target,) = suite.targets
    assert target.value == pytest.approx(100 * adapter["ms_per_candidate"]
                                         / prompt["ms_per_candidate"])
    assert target.goal == "<= 1" and target.unit == "%"
    # no text-tower pass: far cheaper than the prompt even at 10 classes
    assert adapter["ms_per_candidate"] < prompt["ms_per_candidate"] / 5
