"""The pruning example in its quick mode: correlations computed, Taylor and magnitude pruned to 0.6 of the MACs,
both models built for cortex-m7, the pruned firmware smaller and faster, emulator == host bit for bit."""

from prune_mnist import main
from toolchains import require_board_tools


def test_quick_prune_example(tmp_path):
    require_board_tools("cortex-m7")
    r = main(["--quick", "--out", str(tmp_path)])
    assert set(r["importance"]["spearman"]) == {"taylor", "taylor2", "magnitude"}
    assert {(x["criterion"], x["target"]) for x in r["sweep"]} == {("taylor", 0.6), ("magnitude", 0.6)}
    assert all(x["macs"] <= 0.6 * r["base"]["macs"] for x in r["sweep"])
    fw = r["firmware"]
    assert fw["pruned"]["flash_bytes"] < fw["unpruned"]["flash_bytes"]
    assert fw["pruned"]["instructions_per_inference"] < fw["unpruned"]["instructions_per_inference"]
    assert fw["pruned"]["emulator_equals_host"] and fw["unpruned"]["emulator_equals_host"]
    for f in ("results.json", "importance.png", "accuracy_vs_macs.png", "pruned_taylor_0.6.pt2"):
        assert (tmp_path / f).exists()
