"""``edgepack flash OUT``: program a built firmware.elf into a real Cortex-M board through pyOCD.

The board comes from OUT/board.json (written by ``edgepack build``): its ``flasher`` must be ``pyocd`` and
its ``pyocd_target`` names the pyOCD target type (e.g. ``stm32f746zgtx``). Emulated and Linux boards have
no flasher; they run with ``edgepack run OUT --on emulator``. Programming uses pyOCD's Python API, the same
calls ``pyocd load`` makes::

    session = ConnectHelper.session_with_chosen_probe(blocking=False, return_first=True, unique_id=UID,
                                                      target_override=TARGET)
    with session:
        FileProgrammer(session).program("OUT/firmware.elf", file_format="elf")
        session.target.reset()

Targets that pyOCD does not build in (most STM32 part numbers) come from a CMSIS device pack, installed
once with ``pyocd pack install <part>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import EdgepackError


def _board(out: Path) -> dict:
    p = out / "board.json"
    if not p.exists():
        raise EdgepackError(f"{out}: not an edgepack output folder (no board.json); run edgepack build first")
    return json.loads(p.read_text())


def _pyocd():
    try:
        from pyocd.core.exceptions import Error
        from pyocd.core.helpers import ConnectHelper
        from pyocd.flash.file_programmer import FileProgrammer
    except ImportError:
        raise EdgepackError("edgepack flash needs pyOCD, which is not installed: pip install pyocd") from None
    return ConnectHelper, FileProgrammer, Error


def flash(out, probe: str | None = None) -> dict:
    """Program OUT/firmware.elf into the board OUT was built for, then reset it.

    ``probe`` is a debug probe's unique ID (or part of it, as pyOCD matches); without it there must be
    exactly one probe attached. Returns what was done: board, target, elf, probe (the probe's full UID)."""
    out = Path(out)
    board = _board(out)
    name = board.get("name", "?")
    flasher = board.get("flasher")
    if not flasher:
        if board.get("emulator"):
            hint = f"run it with edgepack run {out} --on emulator"
        elif board.get("arch") == "host":
            hint = f"run it with edgepack run {out} --on host"
        else:
            hint = (f"run it with edgepack run {out} --on emulator, or copy the binary {out}/firmware.elf "
                    "to the board")
        raise EdgepackError(f"board {name} has no flasher (edgepack flashes real Cortex-M boards only): {hint}; "
                            "to flash, build for a board with a flasher (e.g. --board nucleo-f746zg)")
    if flasher != "pyocd":
        raise EdgepackError(f"board {name}: unknown flasher {flasher!r} in its board file; edgepack flashes "
                            "with pyocd")
    target = board.get("pyocd_target")
    if not target:
        raise EdgepackError(f"board {name}: flasher pyocd but no pyocd_target in its board file "
                            "(add e.g. pyocd_target = \"stm32f746zgtx\")")
    elf = out / "firmware.elf"
    if not elf.exists():
        raise EdgepackError(f"{out}: no firmware.elf (was the cross toolchain missing at build time?); rebuild "
                            f"with edgepack build --board {name}")

    ConnectHelper, FileProgrammer, PyocdError = _pyocd()
    where = f"target {target}, board {name}"
    try:
        found = ConnectHelper.get_all_connected_probes(blocking=False, unique_id=probe)
    except (PyocdError, OSError) as e:
        raise EdgepackError(f"could not list debug probes ({type(e).__name__}: {e})") from e
    if not found:
        which = f"matching --probe {probe}" if probe else "attached"
        raise EdgepackError(f"no debug probe found ({which}) to flash {where}: connect the board's ST-LINK / "
                            "CMSIS-DAP probe over USB (pyocd list shows the probes)")
    if len(found) > 1:
        ids = ", ".join(p.unique_id for p in found)
        raise EdgepackError(f"{len(found)} debug probes found ({ids}): choose one with --probe UID")
    uid = found[0].unique_id
    try:
        # One probe matches (checked above), so return_first never picks among several and pyOCD never
        # prompts; blocking=False: no waiting for a probe to appear.
        session = ConnectHelper.session_with_chosen_probe(blocking=False, return_first=True, unique_id=probe,
                                                          target_override=target)
        if session is None:
            raise EdgepackError(f"no debug probe found to flash {where} (was it unplugged?)")
        with session:
            FileProgrammer(session).program(str(elf), file_format="elf")
            session.target.reset()
    except PyocdError as e:
        msg = f"flashing {elf} ({where}, probe {uid}) failed: {type(e).__name__}: {e}"
        if "not recognized" in str(e):
            msg += f" (pyOCD needs the CMSIS pack for {target}: pyocd pack install {target})"
        raise EdgepackError(msg) from e
    except OSError as e:  # USB permissions, probe unplugged mid-way
        raise EdgepackError(f"flashing {elf} ({where}, probe {uid}) failed: {type(e).__name__}: {e}") from e
    return {"board": name, "target": target, "elf": str(elf), "probe": uid}
