"""Boards are data: one TOML file per board in boards/ (cpu, arch, memory sizes, toolchain, emulator).

Adding a board is adding a file, to boards/ or to a folder named in EDGEPACK_BOARDS_PATH (os.pathsep
separated; those files win over boards/ on a name clash).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .errors import EdgepackError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"


def board_dirs() -> list:
    extra = [Path(p) for p in os.environ.get("EDGEPACK_BOARDS_PATH", "").split(os.pathsep) if p]
    return [BOARDS_DIR] + extra


def all_boards() -> dict:
    boards = {}
    for p in [f for d in board_dirs() for f in sorted(d.glob("*.toml"))]:
        try:
            b = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise EdgepackError(f"{p}: invalid board file ({e})") from e
        b.setdefault("name", p.stem)
        b["file"] = str(p)
        boards[b["name"]] = b
    return boards


def get_board(name: str) -> dict:
    boards = all_boards()
    if name not in boards:
        raise EdgepackError(f"--board {name}: unknown board; known boards: {', '.join(sorted(boards))} "
                            f"(add one as a file in {BOARDS_DIR})")
    return boards[name]
