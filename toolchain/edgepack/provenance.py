"""What was done to a model before it reached ``edgepack build``: a sidecar file ``<model file>.json``.

Training-time tools (Taylor pruning, ReCU, the compressibility loss, the symmetrical head) record themselves
in the sidecar of the model file they write, under the key ``edgepack_provenance``: a list of steps, oldest
first, each a dict with at least ``method`` (and ``paper``, settings, numbers). A tool that reads a model with a
sidecar carries its steps forward. ``edgepack build`` copies the list into the quantization card; a model
without a sidecar has "none recorded" there (edgepack cannot see from the weights how they were trained).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

KEY = "edgepack_provenance"


def sidecar(model_path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def read(model_path) -> list:
    """The recorded steps of a model file ([] when there is no sidecar or it holds none)."""
    p = sidecar(model_path)
    if not p.is_file():
        return []
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError):
        return []
    steps = doc.get(KEY) if isinstance(doc, dict) else None
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def write(model_path, steps: list, extra: dict | None = None) -> Path:
    """Write the sidecar of ``model_path`` (atomically): ``extra`` fields plus the list of steps."""
    p = sidecar(model_path)
    doc = dict(extra or {})
    doc[KEY] = list(steps)
    tmp = p.with_name("." + p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, p)
    return p


def record(model_path, step: dict, inherited_from=None) -> Path:
    """Write the sidecar of a model file a tool has just written: the steps of ``inherited_from`` (the model
    the tool started from, if it was a file) followed by ``step``. Any older sidecar of ``model_path`` is
    replaced (it described the file's previous contents)."""
    steps = read(inherited_from) if inherited_from is not None else []
    return write(model_path, steps + [step])
