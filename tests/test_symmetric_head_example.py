"""The symmetric-head example in its quick mode: every head/loss trained on every seed, results.json and the
plot written, the fields well formed (numbers from --quick mean nothing, only their shapes and ranges)."""

import json

import numpy as np

from symmetric_head import BACKBONES, CONFIGS, main


def test_quick_symmetric_head_example(tmp_path):
    r = main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "symmetric_head.png").stat().st_size > 10_000
    assert saved["quick"] is True and saved["seeds"] == [0, 1] and saved["epochs"] == 2
    assert [(x["backbone"], x["head"], x["loss"]) for x in saved["runs"]] == \
        [(b, h, l) for b in BACKBONES for h, l in CONFIGS]
    assert len(saved["table"]) == len(BACKBONES) * len(CONFIGS) + 1
    modules = {(x["head"], x["loss"]): x["head_module"] for x in saved["runs"]}
    assert modules[("symmetric", "ce")] == "SymmetricHead" and modules[("linear", "arc")] == "CosineHead"
    assert modules[("symmetric-plane", "arc")] == "SymmetricHead" and modules[("linear", "ce")] == "Linear"
    for run in saved["runs"]:
        assert 0.0 <= run["accuracy_mean"] <= 1.0 and run["accuracy_std"] >= 0
        assert -1.0 <= run["cos_min"] <= run["cos_mean"] <= 1.0
        curves = np.array(run["loss_curves"])
        assert curves.shape == (2, 2) and np.isfinite(curves).all() and (curves > 0).all()
        assert np.allclose(run["loss_std_per_epoch"], curves.std(0))
        assert np.isclose(run["loss_spread"], curves.std(0).mean())
        assert run["loss_relative_spread"] >= 0
        for s in run["per_seed"]:
            assert len(s["cos_per_class"]) == 10 and np.isclose(s["cos_min"], min(s["cos_per_class"]), atol=1e-4)
    assert r["runs"][0]["accuracy_mean"] == saved["runs"][0]["accuracy_mean"]
