"""Post-training binarization of a float-dialect graph (``edgepack build --weights binary``).

For sizing and timing any model as a binary network, without retraining: every conv2d (groups 1) and dense
layer except the first and the last (in execution order) gets binary weights w_b = a_c * sign(w) with
a_c = mean |w_c| per output channel (XNOR-Net's scale; sign(0) = +1), and a sign() on its input, so weights
and activations are 1 bit. Expect a large accuracy drop: the build reports the accuracy it gets. Layers that
already read a sign() (a model trained with edgepack's ReCU) keep their trained binary weights. A ReLU right
before a binarized layer is dropped (sign(relu(x)) would be constant): the layer binarizes the pre-activation.
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph, infer_shapes


def binary_candidates(g: Graph) -> list:
    """The layers post-training binarization may take: every conv2d (groups 1) and dense but the first and the
    last (the first reads the model input, the last writes the logits: both stay int8)."""
    layers = [n for n in g.nodes if n.op in ("conv2d", "dense")][1:-1]
    return [n.name for n in layers if not (n.op == "conv2d" and n.attrs.get("group", 1) != 1)]


def binarize_graph(g: Graph, first_last_int8: bool = True, only=None) -> list:
    """Binarize ``g`` in place; return the names of the layers it binarized. ``only``: binarize just these
    layers (names; each must be one of :func:`binary_candidates`)."""
    from ..errors import EdgepackError

    layers = [n for n in g.nodes if n.op in ("conv2d", "dense")]
    if only is not None:
        allowed = set(binary_candidates(g))
        for name in only:
            if name not in allowed:
                raise EdgepackError(f"--layer-weights {name}=binary: {name} cannot be binary (binary layers: "
                                    f"{', '.join(sorted(allowed)) or 'none'}; not the first or last layer, not a "
                                    "depthwise conv)")
        layers = [n for n in layers if n.name in set(only)]
    elif first_last_int8:
        layers = layers[1:-1]
    done = []
    for n in layers:
        if n.op == "conv2d" and n.attrs.get("group", 1) != 1:
            continue  # no binary depthwise kernel: stays int8
        src = n.inputs[0]
        prod = g.producer(src)
        if prod is not None and prod.op == "sign":
            continue  # trained binary layer
        # a sign before a flatten keeps the spatial layout the binary dense kernel reads
        target, reader = (prod.inputs[0], prod) if prod is not None and prod.op in ("flatten", "reshape") \
            else (src, n)
        # sign(relu(x)) is always +1: binarize the pre-activation instead (its relu goes)
        act = g.producer(target)
        if act is not None and act.op in ("relu", "clip") and len(g.consumers(target)) == 1 \
                and target not in g.outputs:
            g.nodes.remove(act)
            reader.inputs = [act.inputs[0] if t == target else t for t in reader.inputs]
            target = act.inputs[0]
        s_out = g.fresh(target + "_sign")
        g.add_tensor(s_out, g.tensors[target].shape)
        sign = g.add_node("sign", g.fresh(n.name + "_sign"), [target], [s_out])
        g.nodes.remove(sign)
        g.nodes.insert(g.nodes.index(reader), sign)
        reader.inputs = [s_out if t == target else t for t in reader.inputs]
        w = g.const(n.inputs[1]).astype(np.float64)
        a = np.abs(w.reshape(w.shape[0], -1)).mean(axis=1)
        a = np.where(a > 0, a, 1e-8).reshape((-1,) + (1,) * (w.ndim - 1))
        n.inputs[1] = g.add_const(g.fresh(n.inputs[1] + "_binary"), (np.where(w >= 0, 1.0, -1.0) * a)
                                  .astype(np.float32))
        done.append(n.name)
    g.prune_unused()
    infer_shapes(g)
    return done
