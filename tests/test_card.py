"""The quantization card and the build report: every field comes from the build (it changes when the build's
choices change), measured numbers equal report.json, --eval accuracy equals what `edgepack run` gives,
`edgepack card` prints one card or the fields where two differ, and the report has its table and plots."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from clitools import edgepack, one_line_error
from edgepack import card
from edgepack.build import build
from edgepack.compress import prune_taylor as pt
from edgepack.runners import run
from toolchains import require_board_tools

SHAPE = (1, 3, 8, 8)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.c3 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.fc = nn.Linear(12 * 2 * 2, 5)

    def forward(self, x):
        x = self.c1(x)
        x = torch.relu(x + self.c2(x))
        return self.fc(torch.flatten(self.c3(x), 1))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("card")
    torch.manual_seed(0)
    m = Net().eval()
    torch.export.save(torch.export.export(m, (torch.zeros(SHAPE),)), d / "m.pt2")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64,) + SHAPE[1:]).astype(np.float32)
    with torch.no_grad():
        y = m(torch.from_numpy(x)).argmax(1).numpy()
    y[::4] = (y[::4] + 1) % 5  # not every label agrees with the model: accuracy 0.75 in float
    np.save(d / "calib.npy", x[:16])
    np.savez(d / "eval.npz", x=x, y=y)
    return d


def _build(files, out, **kw):
    return build(files / "m.pt2", kw.pop("board", "host"), out, calib=files / "calib.npy", **kw)


def test_card_fields_follow_the_build_choices(files, tmp_path):
    r_a = _build(files, tmp_path / "a")
    r_b = _build(files, tmp_path / "b", per_channel=False)
    r_c = _build(files, tmp_path / "c", weights="exp4")
    a, b, c = (card.load(tmp_path / k) for k in "abc")
    assert a["weights"]["granularity"] == "per-channel" and b["weights"]["granularity"] == "per-layer"
    assert {l["granularity"] for l in a["layers"] if "granularity" in l} == {"per-channel"}
    assert {l["granularity"] for l in b["layers"] if "granularity" in l} == {"per-tensor"}
    assert a["weights"]["formats_used"] == ["int8"]
    assert c["weights"]["first_layer"] == "int8" and c["weights"]["last_layer"] == "int8"
    assert any(f.startswith("exp4") for f in c["weights"]["formats_used"])
    exp_rows = [l for l in c["layers"] if l.get("weight_format", "").startswith("exp4")]
    assert exp_rows and all("exponential codebook, base q" in l["weight_format"] and l["codebook_size"] == 7
                            and l["codebook_granularity"] in ("per channel", "base per layer, scale per channel")
                            for l in exp_rows)
    assert all("codebook_size" not in l for l in a["layers"])  # int8 layers have no codebook
    assert a["residual_add"].startswith("TFLite ADD") and a["pooling"]["max"] == "none"
    assert a["pooling"]["average"].startswith("integer sum") and a["softmax"] == "none"
    assert len(a["batchnorm"]["folded"]) == 2
    assert a["calibration"]["images"] == 16 and a["calibration"]["source"].endswith("calib.npy")
    assert a["pruning"] == "none recorded" and a["training_methods"] == "none recorded"
    fields = {f for f, _, _ in card.diff(a, b)}
    assert "weights.granularity" in fields and "layers[conv2d].granularity" in fields
    assert "weights.option" in {f for f, _, _ in card.diff(a, c)}
    for r, k in ((r_a, "a"), (r_b, "b"), (r_c, "c")):  # measured numbers are the report's
        m = card.load(tmp_path / k)["measured"]
        rep = json.loads((tmp_path / k / "report.json").read_text())
        for f in ("flash_bytes", "ram_bytes", "arena_bytes", "weights_bytes", "macs"):
            assert m[f] == rep[f] == r[f]
        assert m["parameters"] == rep["float_parameters"]
        assert card.load(tmp_path / k)["bit_exactness"]["this_build"].endswith("True")


def test_pruned_model_card_records_the_pruning(files, tmp_path):
    x, y = np.load(files / "eval.npz")["x"], np.load(files / "eval.npz")["y"]
    np.savez(tmp_path / "train.npz", x=np.concatenate([x] * 4), y=np.concatenate([y] * 4))
    info = pt.prune_file(files / "m.pt2", tmp_path / "train.npz", tmp_path / "p.pt2", target_macs=0.7,
                         step_batches=2, batch=32, finetune_epochs=0.2, progress=False)
    build(tmp_path / "p.pt2", "host", tmp_path / "pruned", calib=files / "calib.npy")
    _build(files, tmp_path / "plain")
    pc, plain = card.load(tmp_path / "pruned"), card.load(tmp_path / "plain")
    assert plain["pruning"] == "none recorded"
    (step,) = pc["pruning"]
    assert step["method"] == "Taylor pruning" and step["macs_after"] == info["macs"] == pc["measured"]["macs"]
    assert step["macs_before"] == plain["measured"]["macs"]
    assert pc["training_methods"] == ["Taylor pruning"]
    assert any(f.startswith("pruning") for f, _, _ in card.diff(plain, pc))


def test_eval_accuracy_equals_run_outputs(files, tmp_path):
    r = _build(files, tmp_path / "e", eval_data=files / "eval.npz")
    m = r["measured"]
    z = np.load(files / "eval.npz")
    y_host, _ = run(tmp_path / "e", z["x"], on="host")
    assert m["built_accuracy"] == float((y_host.argmax(1) == z["y"]).mean())
    assert m["built_accuracy_measured_on"] == "host (cffi)" and m["eval_images"] == 64
    assert m["float_accuracy"] == pytest.approx(0.75)
    assert card.load(tmp_path / "e")["measured"]["built_accuracy"] == m["built_accuracy"]
    md = (tmp_path / "e" / "report.md").read_text()
    assert "| instructions |" in md and "![arena.png](arena.png)" in md and "![layers.png](layers.png)" in md
    assert (tmp_path / "e" / "arena.png").stat().st_size > 1000 and (tmp_path / "e" / "layers.png").exists()


def test_eval_on_the_emulator_with_instructions(files, tmp_path):
    require_board_tools("cortex-m7")
    r = _build(files, tmp_path / "m7", board="cortex-m7", eval_data=files / "eval.npz")
    m = r["measured"]
    assert m["built_accuracy_measured_on"].startswith("emulator")
    checks = {(c["inputs"].split(" (")[0], tuple(c["targets"])): c for c in m["bit_exact_checks"]}
    n_cal = len(np.load(files / "calib.npy"))
    assert checks[("evaluation", ("reference", "host"))]["count"] == 64
    assert checks[("evaluation", ("reference", "emulator"))]["count"] == 64
    assert checks[("calibration", ("reference", "host"))]["count"] == n_cal  # the whole batch
    assert checks[("calibration", ("reference", "emulator"))]["count"] == min(16, n_cal)
    assert all(c["equal"] for c in m["bit_exact_checks"]) and m["bit_exact"].endswith(": True")
    assert m["bit_exact"].startswith("reference == host on 64 evaluation input(s); reference == emulator on 64 ")
    stats = {}
    y, _ = run(tmp_path / "m7", np.load(files / "eval.npz")["x"][:4], on="emulator", stats=stats)
    assert m["instructions_min_max"][0] <= stats["instructions"].min() <= m["instructions_min_max"][1]
    assert all(l["instructions"] > 0 for l in r["layers"])
    c = card.load(tmp_path / "m7")
    assert c["measured"]["instructions_per_inference"] == m["instructions_per_inference"]
    assert c["board"]["emulator_machine"] == "mps2-an500"


def test_cli_card(files, tmp_path):
    for k, extra in (("a", []), ("b", ["--scale", "per-layer"])):
        r = edgepack("build", files / "m.pt2", "--board", "host", "--calib", files / "calib.npy", "-o", tmp_path / k,
                     *extra)
        assert r.returncode == 0, r.stderr
    one = edgepack("card", tmp_path / "a")
    assert one.returncode == 0 and one.stdout.startswith("# Quantization card: m.pt2 on host")
    assert one.stdout == (tmp_path / "a" / "quantization_card.md").read_text()
    two = edgepack("card", tmp_path / "a", tmp_path / "b")
    assert two.returncode == 0 and "weights.granularity" in two.stdout and "per-layer" in two.stdout
    one_line_error(edgepack("card", tmp_path / "nothing"), "quantization_card.json")
    keep = tmp_path / "a"  # an earlier build: a failing --eval leaves it as it was
    before = {p: p.read_bytes() for p in keep.rglob("*") if p.is_file()}
    np.savez(tmp_path / "bad.npz", x=np.zeros((2,) + SHAPE[1:], np.float32))
    one_line_error(edgepack("build", files / "m.pt2", "--board", "host", "--calib", files / "calib.npy", "-o",
                            keep, "--eval", tmp_path / "bad.npz"), "bad.npz", "y")
    assert {p: p.read_bytes() for p in keep.rglob("*") if p.is_file()} == before
