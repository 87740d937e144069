import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "toolchain", ROOT, ROOT / "tests", ROOT / "examples"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# Keep the kernel cache inside the session's temp area unless the user chose one.
os.environ.setdefault("EDGEPACK_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "edgepack-test-cache"))

# In CI (.ci/run sets EDGEPACK_REQUIRE_TOOLS=1; a CI variable does too) no test may skip: a skip there means a
# toolchain, emulator or package the set-up should have installed is missing. The only skip allowed is the one
# that depends on hardware CI never has.
STRICT = bool(os.environ.get("EDGEPACK_REQUIRE_TOOLS") or os.environ.get("CI"))
ALLOWED_SKIPS = ("a real debug probe is attached",)


def pytest_runtest_makereport(item, call):
    import pytest

    if not STRICT or call.excinfo is None or not call.excinfo.errisinstance(pytest.skip.Exception):
        return None
    reason = str(call.excinfo.value)
    if any(a in reason for a in ALLOWED_SKIPS):
        return None
    rep = pytest.TestReport.from_item_and_call(item, call)
    rep.outcome = "failed"
    rep.longrepr = f"skipped in CI (EDGEPACK_REQUIRE_TOOLS / CI set): {reason}; the set-up must install it"
    return rep
