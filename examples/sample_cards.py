"""Copy the quantization cards of the examples' builds into examples/cards/ (the committed samples).

Run the examples first (each writes its builds under build/), then this script:

    python examples/mnist_cnn.py                        -> build/mnist                         (int8, --eval)
    python examples/prune_mnist.py                      -> build/prune/fw_pruned               (Taylor-pruned)
    python examples/compressibility_sweep.py            -> build/compressibility/fw_lambda0.03_sparse
    python examples/mnist_binary.py                     -> build/binary/mnist_binary_cortex-m7 (ReCU binary)
    python examples/sample_cards.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = {
    "mnist_cnn_int8_cortex-m7": "build/mnist",
    "mnist_cnn_taylor_pruned_cortex-m7": "build/prune/fw_pruned",
    "mnist_cnn_compressibility_sparse_cortex-m7": "build/compressibility/fw_lambda0.03_sparse",
    "mnist_binary_recu_cortex-m7": "build/binary/mnist_binary_cortex-m7",
}


def main():
    dest = ROOT / "examples" / "cards"
    dest.mkdir(exist_ok=True)
    missing = []
    for name, folder in SAMPLES.items():
        src = ROOT / folder
        if not (src / "quantization_card.json").exists():
            missing.append(folder)
            continue
        for ext in ("md", "json"):
            shutil.copyfile(src / f"quantization_card.{ext}", dest / f"{name}.{ext}")
        print(f"{folder} -> examples/cards/{name}.md")
    if missing:
        print("not built yet (run the examples first): " + ", ".join(missing), file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
