"""`sharpzo-ext compare` on the embedded tasks (small budgets, one seed)."""

import json

import pytest

from sharpzo_ext.cli import main


@pytest.mark.slow
def test_compare_writes_its_tables_and_counts_equal_budgets(tmp_path, cache, capsys):
    out = tmp_path / "cmp"
    methods = ["sharpzo", "sharpzo-released", "zip", "spsa-gc", "cmaes", "coop"]
    assert main(["compare", "--data", "embedded", "--methods", *methods, "--seeds", "0",
                 "--budget", "600", "--coop-budget", "30", "--eval-every", "100",
                 "--out", str(out), "--cache-dir", cache, "--quiet"]) == 0
    records = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in records] == methods
    for r in records:
        for key in ("method", "seed", "test_acc", "forward_passes", "wall_time_s"):
            assert key in r
        assert 0 <= r["test_acc"] <= 1 and r["seed"] == 0 and r["task"] == "embedded"
    budgets = {r["method"]: r["forward_passes"] for r in records}
    assert 600 <= budgets["sharpzo"] < 600 + 24 and 600 <= budgets["cmaes"] < 620
    # the released configuration pays 2d = 256 forward passes per generation for CGE: three
    # generations of 40 + 256 reach the budget
    assert budgets["sharpzo-released"] == 3 * (40 + 2 * 128)
    # ZIP and SPSA-GC: 5 two-sided queries, 10 forward passes (API calls) a step
    assert budgets["zip"] == budgets["spsa-gc"] == 600
    assert budgets["coop"] == 30
    table = (out / "compare.md").read_text()
    for label in ("SharpZO (ours)", "CoOp (first order)", "ZIP", "SPSA-GC", "zero-shot", "±"):
        assert label in table, label
    assert (out / "compare-embedded.png").read_bytes()[:4] == b"\x89PNG"
    assert "SharpZO (ours)" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_runs_every_task_and_plots_each(tmp_path, cache):
    out = tmp_path / "cmp"
    assert main(["compare", "--tasks", "embedded", "embedded-grainy", "--methods", "cmaes",
                 "--seeds", "0", "1", "--budget", "40", "--eval-every", "20", "--shots", "2",
                 "--out", str(out), "--cache-dir", cache, "--quiet"]) == 0
    records = json.loads((out / "compare.json").read_text())
    assert [(r["task"], r["seed"]) for r in records] == [
        ("embedded", 0), ("embedded", 1), ("embedded-grainy", 0), ("embedded-grainy", 1)]
    table = (out / "compare.md").read_text()
    assert "### embedded\n" in table and "### embedded-grainy\n" in table
    for task in ("embedded", "embedded-grainy"):
        assert (out / f"compare-{task}.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_unknown_methods(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's choices: usage and status 2
        main(["compare", "--methods", "adam", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "invalid choice: 'adam'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_target_is_zero_shot_plus_half_of_coops_gain():
    from sharpzo_ext.clip.runs.compare_report import target_accuracy

    records = [{"method": m, "seed": s, "test_acc": acc, "zero_shot_test_acc": zs}
               for s, zs in ((0, 0.2), (1, 0.4))
               for m, acc in (("cmaes", 0.5), ("coop", 0.6 + s * 0.2))]
    # zero-shot 0.3 (one value per seed, not per record), CoOp 0.7: target 0.3 + 0.2
    assert target_accuracy(records, ("cmaes", "coop")) == pytest.approx(0.5)
    without_coop = [r for r in records if r["method"] != "coop"]
    assert target_accuracy(without_coop, ("cmaes",)) == pytest.approx(0.95 * 0.5)


def test_an_unknown_task_is_refused_before_anything_runs(tmp_path):
    from sharpzo_ext.clip.runs.compare import CompareConfig
    from sharpzo_ext.clip.runs.config import RunError

    with pytest.raises(RunError, match="'nowhere' is neither a built-in task"):
        CompareConfig(tasks=("embedded", "nowhere")).check()
    CompareConfig(tasks=("embedded", str(tmp_path))).check()  # a folder: loaded when it runs


@pytest.mark.slow
def test_heads_are_compared_by_their_image_encodings(tmp_path, cache):
    out = tmp_path / "cmp"
    methods = ["sharpzo-gda", "gda", "tip-adapter", "linear-probe", "cmaes", "coop"]
    assert main(["compare", "--data", "embedded-grainy", "--methods", *methods, "--seeds", "0",
                 "--budget", "200", "--coop-budget", "10", "--eval-every", "100",
                 "--head-views", "3", "--out", str(out), "--cache-dir",
                 cache, "--quiet"]) == 0
    records = {r["method"]: r for r in json.loads((out / "compare.json").read_text())}
    for kind in ("gda", "tip-adapter", "linear-probe"):
        r = records[kind]
        # 3 shift and 3 flip-shift views, the head choosing between them on validation
        assert r["forward_passes"] == 0 and r["image_encoding_passes"] == 6 and r["head"] == kind
        assert r["test_acc"] > r["zero_shot_test_acc"]
    assert records["sharpzo-gda"]["head"] == "gda"
    assert records["sharpzo-gda"]["image_encoding_passes"] == 6
    assert records["cmaes"]["head"] is None and records["coop"]["head"] is None
    from sharpzo_ext.clip.runs.compare_report import passes

    assert passes(records["coop"], 10) == 20  # a forward and a backward pass a step
    assert passes(records["gda"], 0) == 6 and passes(records["cmaes"], 200) == 200
    table = (out / "compare.md").read_text()
    assert "to CoOp's level: passes" in table and "GDA (training-free head)" in table
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert rows["GDA (training-free head)"].split(" | ")[4] == "6 ± 0"  # passes
    assert rows["CoOp (first order)"].split(" | ")[4] == "20 ± 0"


@pytest.mark.slow
def test_the_image_side_methods_are_compared_in_passes(tmp_path, cache):
    out = tmp_path / "cmp"
    methods = ["sharpzo-adapter", "sharpzo-joint", "clip-adapter", "gda-final"]
    assert main(["compare", "--data", "embedded-stencil", "--methods", *methods, "--seeds", "0",
                 "--budget", "200", "--adapter-budget", "30", "--eval-every", "100",
                 "--head-views", "3", "--out", str(out), "--cache-dir", cache, "--quiet"]) == 0
    records = {r["method"]: r for r in json.loads((out / "compare.json").read_text())}
    assert records["sharpzo-adapter"]["tuned"] == "adapter"
    assert records["sharpzo-joint"]["tuned"] == "prompt+adapter"
    first_order = records["clip-adapter"]
    assert first_order["tuned"] == "adapter" and first_order["forward_passes"] == 30
    assert first_order["passes_per_step"] == 2 and first_order["head"] == "gda"
    final = records["gda-final"]  # as sharpzo_ext 0.2 fitted it: no choice to pay for
    assert (final["head_features"], final["head_augment"]) == ("final", "flip-shift")
    assert final["image_encoding_passes"] == 3
    for r in records.values():
        assert r["test_acc"] > r["zero_shot_test_acc"] + 0.2
    table = (out / "compare.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert rows["the adapter by Adam, for GDA (first order)"].split(" | ")[4] == "66 ± 0"


def test_a_task_without_a_shifted_split_leaves_its_cells_blank():
    from sharpzo_ext.clip.runs.compare_report import table

    records = [{"method": "gda", "seed": s, "test_acc": 0.8 + s / 100, "val_acc": 0.8,
                "zero_shot_test_acc": 0.1, "forward_passes": 0, "wall_time_s": 0.0,
                "image_encoding_passes": 16, "curve": []} for s in range(3)]
    row = [line for line in table(records, ("gda",), 0.5).splitlines()
           if line.startswith("| GDA")][0]
    assert "nan" not in row and row.split(" | ")[3] == ""  # the shifted split's column


@pytest.mark.slow
def test_compare_head_gives_every_forward_only_method_a_head_but_not_coop(tmp_path, cache):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "embedded", "--methods", "cmaes", "zosgd", "coop",
                 "--head", "tip-adapter", "--seeds", "0", "--budget", "40", "--coop-budget",
                 "4", "--eval-every", "20", "--head-views", "2", "--shots", "2", "--out",
                 str(out), "--cache-dir", cache, "--quiet"]) == 0
    heads = {r["method"]: r["head"] for r in json.loads((out / "compare.json").read_text())}
    assert heads == {"cmaes": "tip-adapter", "zosgd": "tip-adapter", "coop": None}


def test_repeated_seeds_methods_or_tasks_are_refused():
    # #28.13: --seeds 0 0 0 reported "± 0.0" as a 95% interval over three identical runs
    from sharpzo_ext.clip.runs.compare import CompareConfig
    from sharpzo_ext.clip.runs.config import RunError

    for changes, message in ((dict(seeds=(0, 0, 0)), "seeds must be distinct, got 0"),
                             (dict(methods=("cmaes", "zip", "cmaes")), "got 'cmaes' more"),
                             (dict(tasks=("embedded", "embedded")), "tasks must be distinct")):
        with pytest.raises(RunError, match=message):
            CompareConfig(**changes).check()
