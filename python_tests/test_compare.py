"""`sharpzo-ext compare` on the embedded default (small budget, one seed)."""

import json

from sharpzo_ext.cli import main


def test_compare_writes_its_tables_and_counts_equal_budgets(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "sharpzo", "sharpzo-released", "cmaes", "coop",
                 "--seeds", "0", "--budget", "600", "--coop-budget", "30", "--eval-every", "100",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    records = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in records] == ["sharpzo", "sharpzo-released", "cmaes", "coop"]
    for r in records:
        for key in ("method", "seed", "test_acc", "forward_passes", "wall_time_s"):
            assert key in r
        assert 0 <= r["test_acc"] <= 1 and r["seed"] == 0
    budgets = {r["method"]: r["forward_passes"] for r in records}
    assert 600 <= budgets["sharpzo"] < 600 + 24 and 600 <= budgets["cmaes"] < 620
    # the released configuration pays 2d = 256 forward passes per generation for CGE: three
    # generations of 40 + 256 reach the budget
    assert budgets["sharpzo-released"] == 3 * (40 + 2 * 128)
    assert budgets["coop"] == 30
    table = (out / "compare.md").read_text()
    assert "SharpZO (ours)" in table and "CoOp (first order)" in table
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "SharpZO (ours)" in capsys.readouterr().out


def test_compare_refuses_unknown_methods(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:  # argparse's choices: usage and status 2
        main(["compare", "--methods", "adam", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "invalid choice: 'adam'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
