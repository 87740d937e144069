import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "toolchain", ROOT, ROOT / "tests", ROOT / "examples"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# Keep the kernel cache inside the session's temp area unless the user chose one.
os.environ.setdefault("EDGEPACK_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "edgepack-test-cache"))
