"""pytorch-fid's own InceptionV3 (FIDInceptionA/C/E, resize and normalisation) with the
name-derived weights of scripts/reference.py, on fixed images: the reference for
tests/inception.rs. pytorch-fid's weight download is replaced by those weights.

    pip install torch torchvision numpy scipy safetensors && pip install --no-deps pytorch-fid
    python3 scripts/reference_inception.py
"""
import os
import numpy as np
import torch
from safetensors.torch import save_file
import pytorch_fid.inception as fid

from reference import formula_tensor

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "inception.safetensors")


def formula_state_dict(*_args, **_kwargs):
    template = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict()
    return {k: (v if not v.is_floating_point() else formula_tensor(k, tuple(v.shape)))
            for k, v in template.items()}


def main():
    torch.set_grad_enabled(False)
    fid.load_state_dict_from_url = formula_state_dict
    model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    rng = np.random.default_rng(3)
    images = torch.tensor(rng.uniform(0, 1, (2, 3, 64, 80)).astype(np.float32))
    features = model(images)[0].reshape(2, 2048)
    save_file({"images": images, "features": features.contiguous()}, OUT)
    print("features std", float(features.std()), "->", OUT)


if __name__ == "__main__":
    main()
