"""edgepack flash: the pyOCD calls it makes (pyOCD's ConnectHelper / FileProgrammer replaced, no hardware),
and the one-line errors for boards without a flasher, a missing pyOCD and no probe attached."""

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.errors import EdgepackError
from edgepack.flash import flash
from toolchains import require_board_tools
from clitools import edgepack, one_line_error

from pyocd.core.exceptions import TargetSupportError  # noqa: E402
from pyocd.core.helpers import ConnectHelper  # noqa: E402
import pyocd.flash.file_programmer as file_programmer  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("flash")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    torch.export.save(torch.export.export(m, (torch.zeros(1, 1, 8, 8),)), d / "tiny.pt2")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32))
    return d


def build_for(model, board):
    from edgepack.build import build

    require_board_tools(board)
    out = model / f"out-{board}"
    if not out.exists():
        build(model / "tiny.pt2", board, out, calib=model / "calib.npy")
    return out


@pytest.fixture(scope="module")
def nucleo(model):
    return build_for(model, "nucleo-f746zg")


class FakeProbe:
    def __init__(self, uid):
        self.unique_id = uid
        self.description = "STM32 STLink"


class FakePyocd:
    """Stands in for ConnectHelper and FileProgrammer; records every call in ``calls``."""

    def __init__(self, monkeypatch, probes=("066DFF495051717867183826",), program_error=None):
        self.calls = []
        fake = self

        class Target:
            def reset(self, reset_type=None):
                fake.calls.append(("target.reset", reset_type))

        class Session:
            target = Target()

            def __enter__(self):
                fake.calls.append(("session.open",))
                return self

            def __exit__(self, *exc):
                fake.calls.append(("session.close",))
                return False

        class Programmer:
            def __init__(self, session, **kwargs):
                fake.calls.append(("FileProgrammer", session, kwargs))

            def program(self, file_or_path, file_format=None, **kwargs):
                fake.calls.append(("program", file_or_path, file_format, kwargs))
                if program_error:
                    raise program_error

        def get_all_connected_probes(blocking=True, unique_id=None):
            fake.calls.append(("get_all_connected_probes", {"blocking": blocking, "unique_id": unique_id}))
            return [FakeProbe(u) for u in probes if unique_id is None or unique_id.lower() in u.lower()]

        def session_with_chosen_probe(**kwargs):
            fake.calls.append(("session_with_chosen_probe", kwargs))
            self.session = Session()
            return self.session

        monkeypatch.setattr(ConnectHelper, "get_all_connected_probes", staticmethod(get_all_connected_probes))
        monkeypatch.setattr(ConnectHelper, "session_with_chosen_probe", staticmethod(session_with_chosen_probe))
        monkeypatch.setattr(file_programmer, "FileProgrammer", Programmer)

    def names(self):
        return [c[0] for c in self.calls]

    def call(self, name):
        (c,) = [c for c in self.calls if c[0] == name]
        return c


def test_flash_programs_the_elf_for_the_boards_target_through_the_chosen_probe(nucleo, monkeypatch):
    fake = FakePyocd(monkeypatch, probes=("066DFF495051717867183826", "0003000000000000000000AB"))
    r = flash(nucleo, probe="066DFF49")
    elf = str(nucleo / "firmware.elf")
    assert fake.call("get_all_connected_probes")[1] == {"blocking": False, "unique_id": "066DFF49"}
    assert fake.call("session_with_chosen_probe")[1] == {
        "blocking": False, "return_first": True, "unique_id": "066DFF49", "target_override": "stm32f746zgtx"}
    assert fake.call("FileProgrammer")[1] is fake.session
    assert fake.call("program")[1:] == (elf, "elf", {})
    # open, program, reset, close: in that order, reset once after programming
    assert fake.names() == ["get_all_connected_probes", "session_with_chosen_probe", "session.open",
                            "FileProgrammer", "program", "target.reset", "session.close"]
    assert r == {"board": "nucleo-f746zg", "target": "stm32f746zgtx", "elf": elf,
                 "probe": "066DFF495051717867183826"}
    assert json.loads((nucleo / "board.json").read_text())["pyocd_target"] == "stm32f746zgtx"


def test_flash_with_one_probe_needs_no_uid_and_cli_reports_it(nucleo, monkeypatch, capsys):
    from edgepack.cli import main

    fake = FakePyocd(monkeypatch)
    assert main(["flash", str(nucleo)]) == 0
    assert fake.call("session_with_chosen_probe")[1]["unique_id"] is None
    assert fake.call("program")[1:3] == (str(nucleo / "firmware.elf"), "elf")
    out = capsys.readouterr().out
    assert "flashed" in out and "stm32f746zgtx" in out and "066DFF495051717867183826" in out


def test_several_probes_without_uid_is_an_error_listing_them(nucleo, monkeypatch):
    fake = FakePyocd(monkeypatch, probes=("AAA111", "BBB222"))
    with pytest.raises(EdgepackError, match="2 debug probes found .*AAA111, BBB222.*--probe") as e:
        flash(nucleo)
    assert "\n" not in str(e.value)
    assert "session_with_chosen_probe" not in fake.names()


def test_no_matching_probe_is_an_error_naming_the_target(nucleo, monkeypatch):
    fake = FakePyocd(monkeypatch, probes=("AAA111",))
    with pytest.raises(EdgepackError, match="no debug probe found .*--probe ZZZ.*stm32f746zgtx"):
        flash(nucleo, probe="ZZZ")
    assert fake.names() == ["get_all_connected_probes"]


def test_pyocd_failure_is_one_line_with_the_pack_hint(nucleo, monkeypatch):
    err = TargetSupportError("Target type stm32f746zgtx not recognized. Use 'pyocd list --targets' to see "
                             "currently available target types.")
    fake = FakePyocd(monkeypatch, program_error=err)
    with pytest.raises(EdgepackError, match="pyocd pack install stm32f746zgtx") as e:
        flash(nucleo)
    assert "\n" not in str(e.value)
    assert "session.close" in fake.names()  # the session is closed on failure


def test_no_probe_attached_cli_one_line(nucleo):
    if ConnectHelper.get_all_connected_probes(blocking=False):
        pytest.skip("a real debug probe is attached")
    r = edgepack("flash", nucleo)
    one_line_error(r, "no debug probe found", "stm32f746zgtx", "nucleo-f746zg")
    assert r.stdout == ""


def test_pyocd_missing_says_pip_install(nucleo, monkeypatch):
    for mod in ("pyocd", "pyocd.core.helpers", "pyocd.core.exceptions", "pyocd.flash.file_programmer"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    with pytest.raises(EdgepackError, match="pip install pyocd") as e:
        flash(nucleo)
    assert "\n" not in str(e.value)


def test_emulated_board_has_no_flasher(model):
    out = build_for(model, "cortex-m7")
    r = edgepack("flash", out)
    one_line_error(r, "cortex-m7", "no flasher", f"edgepack run {out} --on emulator")


@pytest.mark.parametrize("board, use", [("host", "--on host"), ("rpi4", "--on emulator")])
def test_host_and_linux_boards_have_no_flasher(tmp_path, board, use):
    from edgepack.boards import get_board

    (tmp_path / "board.json").write_text(json.dumps(get_board(board)))
    r = edgepack("flash", tmp_path)
    one_line_error(r, board, "no flasher", use)


def test_not_an_output_folder(tmp_path):
    one_line_error(edgepack("flash", tmp_path), "no board.json", "edgepack build")
