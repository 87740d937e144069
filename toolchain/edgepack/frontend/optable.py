"""Operator tables: the one list of what each frontend imports, and the table its importer dispatches through.

A handler method is registered under the operator names it imports, with the weight formats the layer accepts::

    ONNX_OPS = OpTable("ONNX (.onnx)")

    class _Importer:
        @ONNX_OPS.register("Conv", weights=CONV_WEIGHTS)
        def op_Conv(self, node, attrs): ...

The importer looks the node's operator up in its table (``ONNX_OPS.handler(name)``) and calls that method;
``edgepack ops`` prints the same tables (:func:`ops_text`). An operator that is in no table is refused with one
short line that names it and its node and points to ``edgepack ops``.
"""

from __future__ import annotations

from dataclasses import dataclass

# weight formats a layer accepts (``--weights`` / ``--layer-weights``; see README)
CONV_WEIGHTS = "int8, sparse, exp2..exp8, pow2-2..pow2-6, binary (depthwise: int8, exp2..exp8, pow2-2..pow2-6)"
DENSE_WEIGHTS = "int8, sparse, exp2..exp8, pow2-2..pow2-6, binary"
CONST_INT8 = "constant operand: int8 per-tensor"


@dataclass(frozen=True)
class OpInfo:
    method: str  # name of the importer's handler method
    weights: str  # weight formats it accepts, or "" for an op without weights
    note: str  # what it becomes, or what is restricted


class OpTable(dict):
    """Operator name -> :class:`OpInfo`, filled by the :meth:`register` decorator on handler methods."""

    def __init__(self, title: str):
        super().__init__()
        self.title = title

    def register(self, *names, weights: str = "", note: str = ""):
        def deco(f):
            for name in names:
                if name in self:
                    raise ValueError(f"{self.title}: operator {name} registered twice")
                self[name] = OpInfo(f.__name__, weights, note)
            return f
        return deco

    def handler(self, obj, name: str):
        """The bound handler of operator ``name`` on importer ``obj``, or None."""
        info = self.get(name)
        return getattr(obj, info.method) if info is not None else None

    def rows(self):
        """[(names, weights, note)]: the operators one handler imports the same way share a row."""
        groups: dict[OpInfo, list] = {}
        for name, info in self.items():
            groups.setdefault(info, []).append(name)
        rows = [(", ".join(sorted(names, key=str.lower)), info.weights, info.note) for info, names in groups.items()]
        return sorted(rows, key=lambda r: r[0].lower())


def unsupported_message(source: str, node: str, op: str) -> str:
    return (f"{source}: node '{node}': operator '{op}' is not supported by edgepack (`edgepack ops` lists the "
            "supported operators)")


def ops_text(tables) -> str:
    """The tables as text, one block per frontend: operator, weight formats, note."""
    lines = []
    for t in tables:
        lines.append(f"{t.title}: {len(t)} operators")
        for names, weights, note in t.rows():
            lines.append(f"  {names}")
            for x in (f"weights: {weights}" if weights else "", note):
                if x:
                    lines.append(f"      {x}")
        lines.append("")
    return "\n".join(lines)
