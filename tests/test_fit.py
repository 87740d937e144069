"""edgepack fit: the written OUT meets the budget (measured from its ELF), its accuracy from the reference equals the
emulator's, an impossible budget fails cleanly without writing OUT, and an interrupted search resumes to the
same result."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clitools import edgepack
from toolchains import require_board_tools

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from mnist_common import ResidualCNN, mnist5k, train  # noqa: E402

BOARD = "cortex-m7"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    require_board_tools(BOARD)
    d = tmp_path_factory.mktemp("fit")
    xtr, ytr, xte, yte = mnist5k()
    torch.manual_seed(0)
    m = train(ResidualCNN(6), xtr[::4], ytr[::4], epochs=2, seed=0, progress=False)
    torch.export.save(torch.export.export(m, (torch.from_numpy(xte[:1]),)), d / "m.pt2")
    np.savez(d / "train.npz", x=xtr[::4], y=ytr[::4])
    np.savez(d / "test.npz", x=xte[::10], y=yte[::10])
    return d


def elf_sizes(elf: Path) -> tuple:
    """(flash, RAM) from the ELF's sections (arm-none-eabi-size -A): flash = text + rodata + data, RAM = data + bss +
    stack; measured here, independently of the build's report."""
    out = subprocess.run(["arm-none-eabi-size", "-A", "-d", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sec = {p[0]: int(p[1]) for p in (ln.split() for ln in out.splitlines()) if len(p) >= 2 and p[1].isdigit()}
    flash = sum(v for k, v in sec.items() if k.startswith((".text", ".rodata", ".data")))
    ram = sum(v for k, v in sec.items() if k.startswith((".data", ".bss", ".stack")))
    return flash, ram


def test_fit_meets_the_budget_and_reference_equals_emulator(files, tmp_path):
    from edgepack.fit import fit

    # a budget below the int8 build: the search has to compress
    from edgepack.build import build
    x = np.load(files / "train.npz")["x"][:64]
    np.save(tmp_path / "cal.npy", x)
    i8 = build(files / "m.pt2", BOARD, tmp_path / "int8", calib=tmp_path / "cal.npy")["flash_bytes"]
    budget = int(i8 * 0.93)
    out = tmp_path / "out"
    r = fit(files / "m.pt2", BOARD, files / "train.npz", files / "test.npz", out, flash=budget, max_drop=2.0,
            formats=("int8", "exp4"), prune=(1.0, 0.6))
    chosen, rep = r["chosen"], r["report"]
    # the budget, measured from the written ELF
    flash, ram = elf_sizes(out / "firmware.elf")
    assert flash <= budget and ram <= 524288, (flash, ram, budget)
    assert flash == rep["flash_bytes"]
    assert any(f != "int8" for f in chosen["config"].values()) or chosen["level"] != "1"
    # the search's accuracy (integer reference) is the emulator's on every --eval image
    m = rep["measured"]
    assert m["built_accuracy_measured_on"].startswith("emulator")
    assert m["built_accuracy"] == chosen["accuracy"]
    assert m["float_accuracy"] - chosen["accuracy"] <= 0.02 + 1e-9
    assert m["bit_exact"].endswith("True")
    # OUT is an ordinary build, with the search's report and the card's record
    s = json.loads((out / "fit.json").read_text())
    assert s["chosen"]["config"] == chosen["config"] and s["measured_build"]["flash_bytes"] == flash
    assert {"0.6", "1"} <= set(s["levels"]) and s["pareto_flash"] and s["pareto_instructions"]
    assert (out / "pareto.png").stat().st_size > 0 and "Pareto front" in (out / "fit.md").read_text()
    card = json.loads((out / "quantization_card.json").read_text())
    assert card["fit"]["budget"]["flash_bytes"] == budget and card["fit"]["chosen"] == chosen["config"]
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert {"fit.json", "fit.md", "pareto.png"} <= set(manifest)
    # every sensitivity entry is one layer alone in a format
    for lv in s["levels"].values():
        assert set(lv["sensitivity"]) <= set(lv["layers"])

    # an impossible budget: one error line, OUT not written, the report in the work folder; the measurements are
    # reused from the work folder (nothing is rebuilt)
    work = tmp_path / "out.fit"
    impossible = tmp_path / "impossible"
    p = edgepack("fit", files / "m.pt2", "--board", BOARD, "--data", files / "train.npz", "--eval",
                 files / "test.npz", "--flash", "2K", "--formats", "int8,exp4", "--prune", "1,0.6",
                 "--max-drop", "2", "--work", work, "-o", impossible)
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("edgepack: error: no configuration meets the budget (flash <= 2,048 B") and \
        "closest candidate came to" in last and "Traceback" not in p.stderr, p.stderr
    assert "uniform build" not in p.stderr  # measured once, reused
    assert not impossible.exists()
    assert (work / "fit.md").is_file() and (work / "pareto.png").is_file()
    assert json.loads((work / "fit.json").read_text())["chosen"] is None


def test_an_interrupted_search_resumes_to_the_same_result(files, tmp_path, monkeypatch):
    from edgepack import fit as F

    kw = dict(flash=None, max_drop=1.0, formats=("int8", "exp4"), prune=(1.0,), objective="speed",
              max_instructions=None)
    whole = F.fit(files / "m.pt2", BOARD, files / "train.npz", files / "test.npz", tmp_path / "whole", **kw)

    real = F.Fit.evaluate
    calls = {"new": 0}

    def interrupted(self, lv, cfg, why):
        key = F.config_key(cfg, lv.layers)
        if key not in lv.st["evaluated"]:
            calls["new"] += 1
            if calls["new"] == 4:
                raise KeyboardInterrupt
        return real(self, lv, cfg, why)

    monkeypatch.setattr(F.Fit, "evaluate", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        F.fit(files / "m.pt2", BOARD, files / "train.npz", files / "test.npz", out, **kw)
    assert not out.exists()
    state = json.loads((tmp_path / "resumed.fit" / "state.json").read_text())
    assert len(state["levels"]["1"]["evaluated"]) == 3
    monkeypatch.setattr(F.Fit, "evaluate", real)
    again = F.fit(files / "m.pt2", BOARD, files / "train.npz", files / "test.npz", out, **kw)
    assert again["chosen"]["config"] == whole["chosen"]["config"]
    a = json.loads((tmp_path / "whole" / "fit.json").read_text())
    b = json.loads((out / "fit.json").read_text())
    strip = lambda cs: [{k: c[k] for k in ("level", "config", "accuracy", "flash_bytes", "ram_bytes",  # noqa: E731
                                              "instructions", "why")} for c in cs]
    assert strip(a["candidates"]) == strip(b["candidates"])
    assert a["levels"]["1"]["sensitivity"] == b["levels"]["1"]["sensitivity"]
    # and the speed objective chose the fewest instructions among the candidates that meet everything
    best = min(c["instructions"] for c in a["candidates"] if c["meets"])
    assert whole["chosen"]["instructions"] == best


def test_fit_refuses_a_work_folder_it_did_not_make(files, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    p = edgepack("fit", files / "m.pt2", "--board", BOARD, "--data", files / "train.npz", "--eval",
                 files / "test.npz", "--work", mine, "-o", tmp_path / "out")
    assert p.returncode == 1 and "was not made by edgepack fit" in p.stderr and "Traceback" not in p.stderr
    assert (mine / "notes.txt").read_text() == "keep" and sorted(x.name for x in mine.iterdir()) == ["notes.txt"]


def test_layer_weights_binary_binarizes_just_that_layer(files, tmp_path):
    """The per-layer binary choice fit makes is an ordinary build option: --layer-weights NAME=binary."""
    from clitools import one_line_error

    out = tmp_path / "b"
    r = edgepack("build", files / "m.pt2", "--board", "host", "--layer-weights", "conv2d_2=binary", "-o", out)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    ops = {l["name"]: l["op"] for l in rep["layers"]}
    assert ops["conv2d_2"].startswith("bconv2d") and ops["conv2d_1"] == "conv2d_s8" and ops["conv2d_3"] == "conv2d_s8"
    assert sum(op == "binarize_s8" for op in ops.values()) == 1
    card = json.loads((out / "quantization_card.json").read_text())
    assert card["weights"]["binarized_after_training"] == ["conv2d_2"]
    one_line_error(edgepack("build", files / "m.pt2", "--board", "host", "--layer-weights", "conv2d=binary", "-o",
                            tmp_path / "c"), "conv2d=binary", "cannot be binary", "not the first or last")
    assert not (tmp_path / "c").exists()
