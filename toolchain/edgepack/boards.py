"""Boards are data: one TOML file per board in boards/ (cpu, arch, memory sizes, toolchain, emulator)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import EdgepackError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"


def all_boards() -> dict:
    boards = {}
    for p in sorted(BOARDS_DIR.glob("*.toml")):
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
