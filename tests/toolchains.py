"""Tests that need a cross toolchain or an emulator skip without one, except in CI (EDGEPACK_REQUIRE_TOOLS or CI
set, as .ci/run does), where they fail."""

import os
import shutil

import pytest

from edgepack.boards import get_board


def require_board_tools(name: str):
    b = get_board(name)
    need = []
    if b.get("arch") in ("cortex-m", "linux"):
        need.append((b["toolchain_prefix"] + "gcc", b["toolchain_package"]))
    if b.get("emulator"):
        need.append((b["emulator"], b.get("emulator_package", b["emulator"])))
    for tool, pkg in need:
        if shutil.which(tool) is None:
            msg = f"{tool} not installed (Debian package {pkg}); needed for board {name}"
            if os.environ.get("EDGEPACK_REQUIRE_TOOLS") or os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
    return b
