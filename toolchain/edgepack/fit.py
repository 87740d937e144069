"""``edgepack fit``: the smallest (or fastest) firmware that keeps the accuracy, chosen per layer.

    edgepack fit MODEL --board B --data train.npz --eval test.npz [--max-drop 1.0] [--flash 512K] [--ram 128K]
                 [--max-instructions 20M] [--objective size|speed] -o OUT

What it searches: a weight format per conv / dense layer (int8, exp3..exp6, binary where the layer may be
binary, sparse) and, with ``--data``, a Taylor pruning level (``--prune``, fractions of the MACs; each pruned
model is fine-tuned by :func:`edgepack.compress.prune_taylor.prune`). A candidate is one pruning level and one
format per layer.

What a candidate costs, measured, not guessed:

- **Accuracy**: the integer reference (the specification, bit-exact with every board) on ``--eval``. No
  emulator run per candidate.
- **Instructions, kernel code bytes**: from real builds. For every pruning level and format F, one *uniform
  build* gives every layer in format F (where it may take F); the emulator's per-layer instruction counts and the
  ELF's kernel symbol sizes give a table per (layer, format). The table is cached per kernel specialisation
  (op, shapes, attributes, format) in the work folder, so a build whose layers are all known is not run again.
  Layers that share a kernel in a uniform build share it in any candidate (counted once).
- **Flash, RAM**: flash = the board's base (its int8 build minus that build's kernels and constants) + the
  candidate's kernel code + its constants (exact, from its quantized graph); RAM = base + the candidate's
  arena (exact, from its memory plan). The model is checked against every uniform build (fit.md, "cost model
  check") and the chosen build is measured from its ELF before OUT is written: a candidate whose ELF breaks
  the budget is marked so and the next one is built.

The search (per pruning level), and why:

1. **Sensitivity** (as HAQ / HAWQ do): the accuracy when each layer alone takes each format, the others int8.
2. **Greedy on the sensitivity, each step verified.** Start from all-int8.
   - While a budget is broken: take the move (one layer, one format) with the largest cut in budget
     violation per unit of price. The price is the layer's sensitivity as a fraction of ``--max-drop``, plus
     (objective speed) the relative increase in instructions.
   - Once every budget is met: take the moves that improve the objective (flash for size, instructions for
     speed) without breaking a budget, largest gain per price first.
   - Every move is verified: the new candidate's accuracy is measured on ``--eval``. A move that loses more
     than ``--max-drop`` against float is rejected and never retried (compressing more layers does not give
     accuracy back).

   Why greedy and not an exhaustive or evolutionary search: the space is (formats)^(layers) x levels, and each
   verification costs a quantization and a reference run over ``--eval``. The sensitivity table makes the
   per-layer costs nearly additive, which is where greedy on cost / benefit ratios is near-optimal (the
   knapsack argument HAWQ-V3 uses), at O(layers x formats) evaluations. Verifying each step catches the
   interactions that additivity misses.
3. Across levels, the chosen candidate is the feasible one (every budget met, drop <= ``--max-drop``) with
   the best objective (ties: higher accuracy). The Pareto fronts (accuracy against flash, and against
   instructions) are taken over every candidate evaluated.

State: ``--work`` (default ``OUT.fit``, beside OUT) holds the checkpoint (``state.json``, written after
every evaluation), the pruned models and the uniform builds. The same command resumes from it and
reaches the same result; changed budgets or objective reuse every measurement. OUT is an ordinary
``edgepack build`` of the chosen configuration, plus ``fit.json``, ``fit.md`` and ``pareto.png``. When no
candidate meets the budget, fit writes those three into the work folder, says how close it came, and leaves
OUT alone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import outdir
from .boards import all_boards, get_board
from .errors import EdgepackError

DEFAULT_FORMATS = ("int8", "exp3", "exp4", "exp5", "exp6", "binary", "sparse")
FIT_FORMATS = ("int8", "binary", "sparse") + tuple(f"exp{b}" for b in range(2, 9))
MARKER = ".edgepack-fit"
STATE_VERSION = 1
ALGORITHM = ("per-layer sensitivity, then greedy moves by budget (or objective) gain per accuracy price, each "
             "verified on --eval with the integer reference")


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _amount(s: str, option: str, units: dict, example: str) -> int:
    t = str(s).strip().upper().removesuffix("B")
    mult = units.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise EdgepackError(f"{option} {s}: expected a number like {example}") from None
    if v <= 0:
        raise EdgepackError(f"{option} {s}: must be positive")
    return int(v)


def parse_bytes(s: str, option: str) -> int:
    """'512K', '1M', '32768' -> bytes (K = 1024)."""
    return _amount(s, option, {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}, "32768, 512K or 1M")


def parse_count(s: str, option: str) -> int:
    """'20M', '500k', '1e6' -> a count (k = 1000, M = 10^6)."""
    return _amount(s, option, {"K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9}, "20M, 500k or 1e6")


def measurement_board(board: dict) -> dict:
    """The board whose emulator counts the instructions: the board itself, else an emulated board with the same
    CPU, features and compiler flags but for the FPU ones (e.g. cortex-m7 for nucleo-f746zg)."""
    if board.get("emulator"):
        return board
    if board.get("arch") != "cortex-m":
        return board

    def key(b):
        return (b.get("arch"), b.get("cpu"), tuple(b.get("features", [])),
                tuple(f for f in b.get("cflags", []) if not f.startswith(("-mfpu", "-mfloat-abi"))))

    for b in all_boards().values():
        if b.get("emulator") and key(b) == key(board):
            return b
    return board


# ---- the work folder -----------------------------------------------------------------------------------------
class Work:
    """The work folder: created by fit (it holds ``.edgepack-fit``); an existing folder without that file is
    refused. ``state.json`` is replaced atomically after every evaluation."""

    def __init__(self, path: Path, given: str):
        self.dir = Path(path)
        if self.dir.exists():
            if not self.dir.is_dir() or not (self.dir / MARKER).is_file():
                raise EdgepackError(f"--work {given}: {self.dir} exists and was not made by edgepack fit (no "
                                    f"{MARKER}); choose another --work (nothing was changed)")
        else:
            self.dir.mkdir(parents=True)
            (self.dir / MARKER).write_text(json.dumps({"made_by": "edgepack fit"}) + "\n")
        self.state_path = self.dir / "state.json"

    def load(self) -> dict:
        if self.state_path.is_file():
            try:
                return json.loads(self.state_path.read_text())
            except ValueError:
                log(f"warning: {self.state_path} is not valid JSON; starting the search afresh")
        return {}

    def save(self, state: dict):
        tmp = self.state_path.with_name(f".state.{os.getpid()}.json")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)


def file_sha(path) -> str:
    return outdir.sha256(Path(path))


# ---- candidates ---------------------------------------------------------------------------------------------
def config_key(formats: dict, layers: list) -> str:
    return ",".join(formats[l] for l in layers)


def layer_spec(g, name: str, fmt: str) -> str:
    """The kernel specialisation of a float-graph layer in a format: op, attributes, shapes (a cache key)."""
    n = next(n for n in g.nodes if n.name == name)
    shapes = [list(g.tensors[t].shape) for t in n.inputs + n.outputs]
    attrs = {k: v for k, v in n.attrs.items() if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}
    text = json.dumps([n.op, attrs, shapes, fmt], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Level:
    """One model (original or pruned) and everything measured on it."""

    def __init__(self, key: str, path: Path, g, st: dict, formats: tuple):
        from .compress.binarize_ptq import binary_candidates

        self.key, self.path, self.g, self.st = key, Path(path), g, st
        self.layers = [n.name for n in g.nodes if n.op in ("conv2d", "dense")]
        binary_ok = set(binary_candidates(g))
        self.allowed = {l: [f for f in formats if f != "binary" or l in binary_ok] for l in self.layers}
        st.setdefault("evaluated", {})
        st.setdefault("sensitivity", {})

    def config(self, **over) -> dict:
        c = {l: "int8" for l in self.layers}
        c.update(over)
        return c

    def uniform(self, f: str) -> dict:
        return {l: (f if f in self.allowed[l] else "int8") for l in self.layers}


def quantize_config(level: Level, formats: dict, x_cal):
    """The integer graph of a candidate, as ``edgepack build`` makes it."""
    from .build import apply_formats
    from .compress.quantize import quantize

    g = copy.deepcopy(level.g)
    _, wf = apply_formats(g, "int8", formats)
    return quantize(g, x_cal, weight_formats=wf)


class ReferenceScorer:
    """Accuracy of integer graphs on (x, y) with the reference executor. The activations of a level's all-int8
    graph are kept, and a candidate runs only from its first node that differs from that graph (the layers
    before it compute the same values): exact, and about half the work on average."""

    def __init__(self, x, y, chunk: int = 250, keep_bytes: int = 1 << 30):
        self.x, self.y, self.chunk, self.keep_bytes = x, y, chunk, keep_bytes
        self.base = None

    @staticmethod
    def _same(a, b, qa, qb) -> bool:
        if a.op != b.op or a.inputs != b.inputs or a.outputs != b.outputs:
            return False
        if json.dumps(a.attrs, sort_keys=True, default=str) != json.dumps(b.attrs, sort_keys=True, default=str):
            return False
        for t in a.inputs:
            da, db = qa.tensors[t].data, qb.tensors[t].data
            if (da is None) != (db is None) or (da is not None and not np.array_equal(da, db)):
                return False
        return True

    def set_base(self, q):
        """Keep the activations of ``q`` (a level's all-int8 graph) when they fit in ``keep_bytes``."""
        from .reference.executor import run_int
        from .runners import Model

        m = Model.from_graph(q)
        per_image = sum(int(np.prod(t.shape[1:])) for t in q.tensors.values() if t.data is None)
        self.base = None
        if per_image * len(self.x) > self.keep_bytes:
            return
        self.base = (q, [run_int(q, m.quantize_input(self.x[i:i + self.chunk]), keep_all=True)
                         for i in range(0, len(self.x), self.chunk)])

    def accuracy(self, q) -> float:
        from .reference.ops import OPS
        from .runners import Model

        m = Model.from_graph(q)
        start, cached = 0, None
        if self.base is not None:
            bq, cached = self.base
            while start < min(len(q.nodes), len(bq.nodes)) and self._same(q.nodes[start], bq.nodes[start], q, bq):
                start += 1
        hits = 0
        for j, i in enumerate(range(0, len(self.x), self.chunk)):
            if cached is not None:
                vals = {t: v for t, v in cached[j].items()}
            else:
                vals = {q.inputs[0]: m.quantize_input(self.x[i:i + self.chunk])}
            for n in q.nodes[start if cached is not None else 0:]:
                args = [vals[t] if q.tensors[t].data is None else q.tensors[t].data for t in n.inputs]
                vals[n.outputs[0]] = OPS[n.op](*args, **n.attrs)
            raw = m.raw_to_model_layout(np.asarray(vals[q.outputs[0]]))
            hits += int((raw.reshape(len(raw), -1).argmax(1) == self.y[i:i + self.chunk]).sum())
        return hits / len(self.x)


def layer_consts(q, layer: str) -> int:
    """Constant bytes of a layer's nodes in the integer graph (its own node and its input sign, if binary)."""
    total = 0
    for n in q.nodes:
        if n.name == layer or n.name.startswith(layer + "_sign"):
            total += sum(int(q.tensors[t].data.nbytes) for t in n.inputs if q.tensors[t].data is not None)
    return total


# ---- the search ----------------------------------------------------------------------------------------------
class Fit:
    def __init__(self, model, board, data, eval_data, out, *, calib=None, max_drop=1.0, flash=None, ram=None,
                 max_instructions=None, objective="size", formats=DEFAULT_FORMATS, prune=None, work=None,
                 input_shape=None, trust_pickle=False, seed=0, max_candidates=200, command=None):
        from .errors import load_labelled_npz

        if objective not in ("size", "speed"):
            raise EdgepackError(f"--objective {objective}: choose size or speed")
        for f in formats:
            if f not in FIT_FORMATS:
                raise EdgepackError(f"--formats {f}: unknown format; choose from {', '.join(FIT_FORMATS)}")
        if "int8" not in formats:
            formats = ("int8",) + tuple(formats)
        if max_drop < 0:
            raise EdgepackError(f"--max-drop {max_drop}: must be at least 0 points")
        self.model = Path(model)
        if not self.model.is_file():
            raise EdgepackError(f"{model}: no such model file")
        self.out_given = out
        self.out = outdir.check_target(out)
        self.board = get_board(board)
        self.mboard = measurement_board(self.board)
        if not self.mboard.get("emulator"):
            raise EdgepackError(f"--board {board}: fit measures instructions on an emulator, and neither this board "
                                "nor a board with its CPU and flags has one")
        self.budget = {"flash_bytes": flash if flash is not None else self.board.get("flash_bytes") or None,
                       "ram_bytes": ram if ram is not None else self.board.get("ram_bytes") or None,
                       "instructions": max_instructions}
        self.objective, self.max_drop, self.formats = objective, float(max_drop), tuple(formats)
        self.seed, self.max_candidates = seed, max_candidates
        self.input_shape, self.trust_pickle = input_shape, trust_pickle
        self.data = Path(data) if data is not None else None
        self.eval_path = Path(eval_data)
        self.xe, self.ye = load_labelled_npz(eval_data, "--eval")
        self.scorer, self.scorer_level = ReferenceScorer(self.xe, self.ye), None
        if self.data is not None:
            self.xd, self.yd = load_labelled_npz(data, "--data")
        if prune is None:
            prune = (1.0, 0.75, 0.5) if self.data is not None else (1.0,)
        prune = tuple(sorted({float(p) for p in prune}, reverse=True))
        if any(not 0 < p <= 1 for p in prune):
            raise EdgepackError(f"--prune {','.join(map(str, prune))}: levels are fractions of the MACs in (0, 1]")
        if any(p < 1 for p in prune) and self.data is None:
            raise EdgepackError("--prune below 1.0 needs --data (the training data that fine-tunes the pruned model)")
        self.prune_levels = prune
        if calib is None and self.data is None:
            raise EdgepackError("edgepack fit needs --data (training data: calibration and pruning) or --calib")
        self.calib_given = calib
        self.work = Work(Path(work) if work else self.out.with_name(self.out.name + ".fit"),
                         str(work) if work else str(self.out.with_name(self.out.name + ".fit")))
        self.command = command
        self.evaluations = 0

    # -- state --------------------------------------------------------------------------------------------
    def _inputs(self) -> dict:
        return {"version": STATE_VERSION, "model": file_sha(self.model),
                "data": file_sha(self.data) if self.data else None, "eval": file_sha(self.eval_path),
                "calib": file_sha(self.calib_given) if self.calib_given else None, "board": self.board["name"],
                "measure_board": self.mboard["name"], "seed": self.seed}

    def _open_state(self):
        st = self.work.load()
        inputs = self._inputs()
        if st.get("inputs") != inputs:
            if st:
                log(f"fit: {self.work.state_path}: a search on other inputs; its measurements per kernel are kept, "
                    "the rest starts afresh")
            st = {"inputs": inputs, "specs": st.get("specs", {}), "levels": {}}
        self.st = st
        self.work.save(st)

    def save(self):
        self.work.save(self.st)

    # -- the data -----------------------------------------------------------------------------------------
    def _calibration(self):
        from .build import read_calibration

        path = self.work.dir / "calib.npy"
        if self.calib_given is not None:
            x = read_calibration(self.calib_given)
        else:
            idx = np.linspace(0, len(self.xd) - 1, min(200, len(self.xd))).astype(int)
            x = self.xd[idx]
        if not path.exists() or not np.array_equal(np.load(path), x):
            np.save(path, x)
        self.x_cal, self.calib_path = x, path

    def _float_accuracy(self, g) -> float:
        from .reference.float_exec import run_float_output

        hits = 0
        for i in range(0, len(self.xe), 250):
            yf = run_float_output(g, self.xe[i:i + 250])
            hits += int((yf.reshape(len(yf), -1).argmax(1) == self.ye[i:i + 250]).sum())
        return hits / len(self.xe)

    # -- levels -------------------------------------------------------------------------------------------
    def _level(self, p: float) -> Level:
        from .frontend import load_model

        key = f"{p:g}"
        st = self.st["levels"].setdefault(key, {})
        if p >= 1.0:
            path = self.model
        else:
            path = self.work.dir / f"pruned-{key}.pt2"
            if st.get("model_sha") is None or not path.exists() or file_sha(path) != st["model_sha"]:
                from .compress.prune_taylor import prune
                from .compress.torch_graph import save_model

                log(f"fit: Taylor pruning to {p:.0%} of the MACs, then fine-tuning (on {self.data})")
                g0 = load_model(self.model, input_shape=self.input_shape, trust_pickle=self.trust_pickle)
                res = prune(g0, self.xd, self.yd, target_macs=p, seed=self.seed,
                            checkpoint=self.work.dir / f"prune-{key}.ckpt")
                save_model(res.net, path)
                st.clear()
                st["model_sha"] = file_sha(path)
                st["macs"] = [int(res.macs_before), int(res.macs)]
                self.save()
        g = load_model(path, input_shape=self.input_shape, trust_pickle=self.trust_pickle and p >= 1.0)
        if "float_accuracy" not in st:
            st["float_accuracy"] = self._float_accuracy(g)
            self.save()
        return Level(key, path, g, st, self.formats)

    # -- measured costs -------------------------------------------------------------------------------------
    def _cost_tables(self, lv: Level):
        """Per (layer, format): kernel, code bytes, instructions, from uniform builds (cached per specialisation);
        the board's flash / RAM base from its int8 build."""
        from .build import build

        specs = self.st["specs"]
        uni = lv.st.setdefault("uniform", {})
        for f in self.formats:
            cfg = lv.uniform(f)
            if f != "int8" and cfg == lv.uniform("int8"):
                continue  # no layer takes it
            keys = {l: layer_spec(lv.g, l, cfg[l]) for l in lv.layers}
            if f in uni and all(k in specs for k in keys.values()):
                continue
            folder = self.work.dir / "builds" / lv.key / f"{f}-{self.mboard['name']}"
            log(f"fit: measuring {f} (level {lv.key}): uniform build for {self.mboard['name']} -> {folder}")
            try:
                r = build(lv.path, self.mboard["name"], folder, calib=self.calib_path,
                          layer_weights={l: v for l, v in cfg.items()}, trust_pickle=self.trust_pickle)
            except EdgepackError as e:
                log(f"fit: {f} cannot be built on this model ({e}); it is left out")
                uni[f] = {"error": str(e)}
                self.save()
                continue
            if "instructions_per_inference" not in r["measured"]:
                raise EdgepackError(f"{folder}: no instruction counts from the {self.mboard['name']} emulator "
                                    f"({r['measured'].get('emulator', 'not run')})")
            rows = {l["name"]: l for l in r["layers"]}
            for l in lv.layers:
                own = [rows[l]] + [v for k, v in rows.items() if k.startswith(l + "_sign")]  # binary: its sign
                specs[keys[l]] = {"kernel": rows[l]["kernel"],
                                  "code_bytes": sum(v["kernel_code_bytes"] or 0 for v in own),
                                  "instructions": sum(v["instructions"] for v in own)}
            uni[f] = {"config": cfg, "flash_bytes": r["flash_bytes"], "ram_bytes": r["ram_bytes"],
                      "instructions": r["measured"]["instructions_per_inference"],
                      "arena_bytes": r["arena_bytes"], "const_bytes": r["const_bytes"], "build": str(folder),
                      "shared": {l: rows[l]["kernel"] for l in lv.layers},
                      "ops": {l: rows[l]["op"] for l in lv.layers}}
            self.save()
        if self.board["name"] != self.mboard["name"] and "target_int8" not in lv.st:
            folder = self.work.dir / "builds" / lv.key / f"int8-{self.board['name']}"
            log(f"fit: flash and RAM base on {self.board['name']}: int8 build -> {folder}")
            r = build(lv.path, self.board["name"], folder, calib=self.calib_path, trust_pickle=self.trust_pickle)
            lv.st["target_int8"] = {"flash_bytes": r["flash_bytes"], "ram_bytes": r["ram_bytes"],
                                    "arena_bytes": r["arena_bytes"], "const_bytes": r["const_bytes"]}
            self.save()
        i8 = uni["int8"]["ops"]
        for f, u in uni.items():  # a format no layer took (sparse rows not smaller): not a choice there
            if f != "int8" and "ops" in u:
                for l in lv.layers:
                    if u["config"][l] == f and u["ops"][l] == i8[l] and f in lv.allowed[l]:
                        lv.allowed[l].remove(f)

    def _base(self, lv: Level) -> dict:
        """The board's flash / RAM / instructions outside the layers' kernels and constants: its int8 build
        minus that build's kernel code, its quantized graph's constants and its arena."""
        if not hasattr(lv, "base"):
            uni, specs = lv.st["uniform"], self.st["specs"]
            b = lv.st.get("target_int8") or uni["int8"]
            e8 = lv.st["evaluated"][config_key(lv.config(), lv.layers)]
            ins8 = sum(specs[layer_spec(lv.g, l, "int8")]["instructions"] for l in lv.layers)
            lv.base = {"flash": b["flash_bytes"] - self._code_bytes(lv, lv.config()) - e8["const_bytes"],
                       "ram": b["ram_bytes"] - e8["arena_bytes"], "instructions": uni["int8"]["instructions"] - ins8}
        return lv.base

    def _code_bytes(self, lv: Level, cfg: dict) -> int:
        """Kernel code of a candidate: layers that share a kernel in the uniform build of their format share it."""
        uni, specs, seen, total = lv.st["uniform"], self.st["specs"], set(), 0
        for l in lv.layers:
            f = cfg[l]
            shared = (f, uni[f]["shared"][l]) if f in uni and "shared" in uni[f] else (f, l)
            if shared in seen:
                continue
            seen.add(shared)
            total += specs[layer_spec(lv.g, l, f)]["code_bytes"]
        return total

    def predict(self, lv: Level, cfg: dict, consts: int, arena: int) -> dict:
        specs = self.st["specs"]
        base = self._base(lv)
        ins = base["instructions"] + sum(specs[layer_spec(lv.g, l, cfg[l])]["instructions"] for l in lv.layers)
        return {"flash_bytes": int(base["flash"] + self._code_bytes(lv, cfg) + consts),
                "ram_bytes": int(base["ram"] + arena), "instructions": float(ins)}

    # -- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, lv: Level, cfg: dict, why: str) -> dict:
        """Accuracy (integer reference on --eval) and costs of a candidate; cached in the checkpoint."""
        from .build import _arena_bytes, const_bytes

        key = config_key(cfg, lv.layers)
        ev = lv.st["evaluated"]
        if key not in ev:
            q = quantize_config(lv, cfg, self.x_cal)
            if self.scorer_level != lv.key:  # the activations this level's candidates start from
                self.scorer.set_base(q if cfg == lv.config() else quantize_config(lv, lv.config(), self.x_cal))
                self.scorer_level = lv.key
            acc = self.scorer.accuracy(q)
            ev[key] = {"accuracy": acc, "const_bytes": const_bytes(q), "arena_bytes": _arena_bytes(q),
                       "layer_consts": {l: layer_consts(q, l) for l in lv.layers}, "why": why,
                       "order": sum(len(s.get("evaluated", {})) for s in self.st["levels"].values())}
            self.save()
            self.evaluations += 1
            log(f"fit: [level {lv.key}] candidate {ev[key]['order'] + 1} ({why}): accuracy {100 * acc:.2f} % "
                f"({100 * (self.st['float_accuracy'] - acc):+.2f} points against float)")
        e = ev[key]
        r = {"level": lv.key, "config": dict(cfg), "accuracy": e["accuracy"],
             "drop": 100 * (self.st["float_accuracy"] - e["accuracy"]), "why": e["why"], "order": e["order"],
             **self.predict(lv, cfg, e["const_bytes"], e["arena_bytes"])}
        r["meets"] = self.meets(r)
        return r

    def violation(self, costs: dict) -> float:
        return sum(max(0.0, costs[k] / v - 1.0) for k, v in self.budget.items() if v)

    def meets(self, r: dict) -> bool:
        return self.violation(r) == 0 and r["drop"] <= self.max_drop + 1e-9

    def objective_of(self, r: dict) -> float:
        return r["flash_bytes"] if self.objective == "size" else r["instructions"]

    def _sensitivity(self, lv: Level):
        sens = lv.st["sensitivity"]
        todo = [(l, f) for l in lv.layers for f in lv.allowed[l] if f != "int8" and f in lv.st["uniform"]
                and "error" not in lv.st["uniform"][f]]
        for i, (l, f) in enumerate(todo):
            r = self.evaluate(lv, lv.config(**{l: f}), f"sensitivity {i + 1}/{len(todo)}: {l} alone {f}")
            sens.setdefault(l, {})[f] = r["accuracy"]
        self.save()

    def _price(self, lv, cur: dict, cand: dict, layer: str, fmt: str, base_acc: float) -> float:
        loss = max(0.0, 100 * (base_acc - lv.st["sensitivity"].get(layer, {}).get(fmt, base_acc)))
        price = loss / max(self.max_drop, 0.1) + 1e-3
        if self.objective == "speed":
            price += max(0.0, cand["instructions"] - cur["instructions"]) / max(cur["instructions"], 1.0)
        return price

    def _estimate(self, lv: Level, cur_r: dict, layer: str, fmt: str) -> dict:
        """Predicted costs of a one-layer move, from the evaluated current candidate and the sensitivity
        candidates' per-layer constants (no quantization needed)."""
        cfg = dict(cur_r["config"])
        old = cfg[layer]
        cfg[layer] = fmt
        ev = lv.st["evaluated"]
        here = ev[config_key(cur_r["config"], lv.layers)]
        alone_new = ev.get(config_key(lv.config(**{layer: fmt}), lv.layers))
        alone_old = ev.get(config_key(lv.config(**({layer: old} if old != "int8" else {})), lv.layers))
        consts = here["const_bytes"]
        if alone_new and alone_old:
            consts += alone_new["layer_consts"][layer] - alone_old["layer_consts"][layer]
        r = self.predict(lv, cfg, consts, here["arena_bytes"])
        r["config"] = cfg
        return r

    def _greedy(self, lv: Level, base: dict) -> list:
        """The greedy walk from all-int8; returns the candidates it accepted, in order."""
        cur, path, rejected = base, [base], set()
        base_acc = base["accuracy"]
        while self.evaluations < self.max_candidates:
            cur_v = self.violation(cur)
            moves = []
            for l in lv.layers:
                for f in lv.allowed[l]:
                    if f == cur["config"][l] or (l, f) in rejected or f not in lv.st["uniform"] or \
                            "error" in lv.st["uniform"][f]:
                        continue
                    alone = lv.st["sensitivity"].get(l, {}).get(f)
                    if alone is not None and 100 * (self.st["float_accuracy"] - alone) > self.max_drop:
                        continue  # alone it already loses too much
                    est = self._estimate(lv, cur, l, f)
                    price = self._price(lv, cur, est, l, f, base_acc)
                    if cur_v > 0:
                        gain = cur_v - self.violation(est)
                    else:
                        if self.violation(est) > 0:
                            continue
                        gain = (self.objective_of(cur) - self.objective_of(est)) / max(self.objective_of(cur), 1)
                    if gain > 1e-9:
                        moves.append((gain / price, l, f))
            if not moves:
                break
            moves.sort(key=lambda m: (-m[0], m[1], m[2]))
            moved = False
            for _, l, f in moves:
                if self.evaluations >= self.max_candidates:
                    break
                cfg = dict(cur["config"])
                cfg[l] = f
                r = self.evaluate(lv, cfg, f"greedy: {l} {cur['config'][l]} -> {f}")
                better = (self.violation(r) < cur_v) if cur_v > 0 else \
                    (self.violation(r) == 0 and self.objective_of(r) < self.objective_of(cur))
                if r["drop"] > self.max_drop or not better:
                    rejected.add((l, f))
                    log(f"fit: [level {lv.key}] {l} -> {f}: rejected ({self._short(r)})")
                    continue
                cur = r
                path.append(r)
                log(f"fit: [level {lv.key}] {l} -> {f}: accepted ({self._short(r)}); best so far: "
                    f"{self._short(self.best(), True)}")
                moved = True
                break
            if not moved:
                break
        return path

    def _short(self, r, full=False) -> str:
        if r is None:
            return "none within budget yet"
        s = (f"{100 * r['accuracy']:.2f} % (drop {r['drop']:.2f}), flash {r['flash_bytes']:,} B, RAM "
             f"{r['ram_bytes']:,} B, {r['instructions'] / 1e6:.2f} M instructions")
        return s + (f", level {r['level']}" if full else "")

    def candidates(self) -> list:
        out = []
        for key, st in self.st["levels"].items():
            lv = self.levels.get(key)
            if lv is None or "int8" not in st.get("uniform", {}) or \
                    config_key(lv.config(), lv.layers) not in st.get("evaluated", {}):
                continue
            for ck, e in st.get("evaluated", {}).items():
                cfg = dict(zip(lv.layers, ck.split(",")))
                if all(cfg[l] in lv.allowed[l] for l in lv.layers):  # not a format a layer did not take
                    out.append(self.evaluate(lv, cfg, e["why"]))
        return sorted(out, key=lambda r: r["order"])

    def best(self, exclude=()):
        ok = [r for r in self.candidates() if r["meets"] and (r["level"], config_key(r["config"], list(r["config"])))
              not in exclude]
        if not ok:
            return None
        return min(ok, key=lambda r: (self.objective_of(r), -r["accuracy"], r["order"]))

    # -- the whole run --------------------------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.time()
        self._open_state()
        self._calibration()
        from .frontend import load_model

        g0 = load_model(self.model, input_shape=self.input_shape, trust_pickle=self.trust_pickle)
        if "float_accuracy" not in self.st:
            self.st["float_accuracy"] = self._float_accuracy(g0)
            self.save()
        log(f"fit: float accuracy {100 * self.st['float_accuracy']:.2f} % on {len(self.ye)} images of "
            f"{self.eval_path}; budget {self._budget_text()}; objective {self.objective}; levels "
            f"{', '.join(f'{p:g}' for p in self.prune_levels)}")
        self.levels = {}
        for p in self.prune_levels:
            lv = self._level(p)
            self.levels[lv.key] = lv
            self._cost_tables(lv)
            base = self.evaluate(lv, lv.config(), "all int8")
            for f in lv.st["uniform"]:
                if "error" not in lv.st["uniform"][f]:
                    self.evaluate(lv, lv.uniform(f), f"uniform {f}")
            self._sensitivity(lv)
            path = self._greedy(lv, base)
            lv.st["path"] = [config_key(r["config"], lv.layers) for r in path]
            self.save()
            log(f"fit: [level {lv.key}] done ({self.evaluations} candidates evaluated by this run so far); best so "
                f"far: {self._short(self.best(), True)}")
        self.seconds = time.time() - t0
        self.st["search_seconds"] = self.st.get("search_seconds", 0.0) + self.seconds
        self.save()
        return self.finish()

    def _budget_text(self) -> str:
        b = self.budget
        parts = [f"flash <= {b['flash_bytes']:,} B" if b["flash_bytes"] else None,
                 f"RAM <= {b['ram_bytes']:,} B" if b["ram_bytes"] else None,
                 f"instructions <= {b['instructions']:,}" if b["instructions"] else None,
                 f"accuracy drop <= {self.max_drop:g} points"]
        return ", ".join(p for p in parts if p)

    def finish(self) -> dict:
        from . import fit_report
        from .build import build

        cands = self.candidates()
        failed_builds = {}
        chosen, final = None, None
        while True:
            chosen = self.best(exclude=set(failed_builds))
            if chosen is None:
                break
            lv = self.levels[chosen["level"]]
            record = self.record(chosen, cands)

            def check(folder, report, chosen=chosen, record=record):
                measured = {"flash_bytes": report["flash_bytes"], "ram_bytes": report["ram_bytes"]}
                if report["measured"].get("instructions_per_inference") is not None:
                    measured["instructions"] = report["measured"]["instructions_per_inference"]
                over = [f"{k} {measured[k]:,.0f} > {v:,}" for k, v in self.budget.items()
                        if v and k in measured and measured[k] > v]
                if over:
                    raise _OverBudget("; ".join(over), measured)
                record["measured_build"] = measured
                fit_report.write(folder, self.summary(cands, chosen, record, measured))

            log(f"fit: building the chosen configuration into {self.out_given}: {self._short(chosen, True)}")
            try:
                final = build(lv.path, self.board["name"], self.out_given, calib=self.calib_path,
                              layer_weights=chosen["config"], eval_data=self.eval_path, fit=record,
                              before_commit=check, trust_pickle=self.trust_pickle and lv.path == self.model,
                              command=self.command)
                break
            except _OverBudget as e:
                log(f"fit: the built ELF breaks the budget ({e}); trying the next candidate")
                failed_builds[(chosen["level"], config_key(chosen["config"], lv.layers))] = e.measured
                key = f"{chosen['level']}:{config_key(chosen['config'], lv.layers)}"
                self.st.setdefault("failed_builds", {})[key] = e.measured
                self.save()
        if chosen is None:
            summary = self.summary(cands, None, None, None)
            fit_report.write(self.work.dir, summary)
            near = summary["closest"]
            how = (f"the closest candidate came to {self._short(near, True)}" if near else "no candidate was built")
            raise EdgepackError(f"no configuration meets the budget ({self._budget_text()}): {how}; "
                                f"every candidate is in {self.work.dir / 'fit.md'} (OUT was not written)")
        return {"chosen": chosen, "report": final, "candidates": len(cands)}

    def record(self, chosen: dict, cands: list) -> dict:
        """What the quantization card records of the search."""
        return {"algorithm": ALGORITHM, "objective": self.objective, "budget": dict(self.budget),
                "max_drop": self.max_drop, "float_accuracy": self.st["float_accuracy"], "eval": str(self.eval_path),
                "candidates_evaluated": len(cands), "pruning_level": chosen["level"],
                "chosen": chosen["config"], "predicted": {k: chosen[k] for k in ("flash_bytes", "ram_bytes",
                                                                                 "instructions", "accuracy")},
                "report": "fit.md"}

    def summary(self, cands, chosen, record, measured) -> dict:
        from .fit_report import pareto

        closest = None
        if chosen is None and cands:
            closest = min(cands, key=lambda r: (self.violation(r) + max(0.0, r["drop"] - self.max_drop) / 100,
                                                self.objective_of(r)))
        levels = {}
        for key, lv in self.levels.items():
            if config_key(lv.config(), lv.layers) not in lv.st.get("evaluated", {}):
                continue
            uni = lv.st["uniform"]
            levels[key] = {
                "model": str(lv.path), "float_accuracy": lv.st["float_accuracy"], "macs": lv.st.get("macs"),
                "layers": lv.layers, "allowed": lv.allowed, "sensitivity": lv.st["sensitivity"],
                "int8_accuracy": lv.st["evaluated"][config_key(lv.config(), lv.layers)]["accuracy"],
                "cost_model_check": [{"format": f, "measured_on": self.mboard["name"],
                                      "measured": {k: u[k] for k in ("flash_bytes", "ram_bytes", "instructions")},
                                      # the build's layers that did not take the format are int8 ones
                                      "predicted": self.evaluate(lv, lv.uniform(f), f"uniform {f}") if
                                      self.board["name"] == self.mboard["name"] else None,
                                      "taken_by": [l for l in lv.layers if lv.uniform(f)[l] == f]}
                                     for f, u in uni.items() if "error" not in u],
                "path": lv.st.get("path", [])}
        uniform = [r for r in cands if r["why"].startswith(("uniform", "all int8"))]
        # the uniform single-format candidate with the best objective that meets everything, and the most accurate
        # one within the size / speed budgets
        best_uniform = min((r for r in uniform if self.meets(r)), key=lambda r: (self.objective_of(r), -r["accuracy"]),
                           default=None)
        best_uniform_budget = max((r for r in uniform if self.violation(r) == 0),
                                  key=lambda r: (r["accuracy"], -self.objective_of(r)), default=None)
        return {"model": str(self.model), "board": self.board["name"], "measure_board": self.mboard["name"],
                "command": self.command, "objective": self.objective, "budget": self.budget,
                "max_drop": self.max_drop, "formats": list(self.formats), "prune_levels": list(self.prune_levels),
                "float_accuracy": self.st["float_accuracy"], "eval": str(self.eval_path),
                "eval_images": int(len(self.ye)), "algorithm": ALGORITHM, "chosen": chosen, "card": record,
                "measured_build": measured, "closest": closest, "levels": levels, "candidates": cands,
                "pareto_flash": pareto(cands, "flash_bytes"), "pareto_instructions": pareto(cands, "instructions"),
                "most_accurate_uniform_within_budget": best_uniform_budget, "best_uniform_meeting_all": best_uniform,
                "failed_builds": self.st.get("failed_builds", {}), "seconds": getattr(self, "seconds", None),
                "search_seconds_all_runs": self.st.get("search_seconds"),
                "work": str(self.work.dir)}


class _OverBudget(EdgepackError):
    def __init__(self, text, measured):
        super().__init__(text)
        self.measured = measured


def fit(model, board, data, eval_data, out, **kw) -> dict:
    """The API of ``edgepack fit`` (see the module docstring); returns {"chosen", "report", "candidates"}."""
    return Fit(model, board, data, eval_data, out, **kw).run()
