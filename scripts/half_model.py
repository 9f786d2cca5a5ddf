"""Store a toonsmith model file in float16 (half the size; toonsmith reads f16 safetensors and
computes in f32). Used for the bundled model.

    pip install numpy safetensors && python3 scripts/half_model.py IN.safetensors OUT.safetensors
"""
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with safe_open(src, "np") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k).astype(np.float16) for k in f.keys()}
    save_file(tensors, dst, metadata=metadata)
    print(f"{len(tensors)} tensors -> {dst}")


if __name__ == "__main__":
    main()
