"""Independent PyTorch reference for toonsmith's numerical tests.

Builds the networks of Fig. 10 with PyTorch layers (nn.Conv2d, nn.GroupNorm(1, C),
torch.nn.utils.spectral_norm, F.interpolate), the CTSS pipeline after the PyTorch port
(../shared/reference/tsa_pytorch.py) plus the official code's variant, and every loss; runs
them on fixed inputs and writes inputs and outputs to tests/fixtures/reference.safetensors.

Weights are not stored: both sides derive them from the tensor's name with the integer hash
below (`formula_weights`), so the fixture stays small and each side builds its network itself.
The same module names as toonsmith's safetensors files are used, which also shows how a PyTorch
user rebuilds toonsmith's generator.

    pip install torch numpy safetensors
    python3 scripts/reference.py            # rewrites tests/fixtures/reference.safetensors
"""
import os
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_grad_enabled(False)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "reference.safetensors")

# ---------------------------------------------------------------- deterministic weights
M32 = 0xFFFFFFFF


def fnv1a(name):
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & M32
    return h


def unit_values(name, count):
    """Uniform-looking values in [0, 1) from an integer hash of (name, index)."""
    seed = fnv1a(name)
    i = np.arange(count, dtype=np.uint64)
    x = (i * np.uint64(2654435761)) & np.uint64(M32)
    x = x ^ np.uint64(seed)
    x = (x * np.uint64(2246822519)) & np.uint64(M32)
    x = x ^ (x >> np.uint64(13))
    x = (x * np.uint64(3266489917)) & np.uint64(M32)
    x = x ^ (x >> np.uint64(16))
    return x.astype(np.float64) / 2.0**32


def formula_tensor(name, shape):
    """The value toonsmith's tests give tensor `name` of `shape` (see tests/common/mod.rs)."""
    count = int(np.prod(shape))
    u = unit_values(name, count) * 2.0 - 1.0
    if len(shape) == 4:
        scale = np.sqrt(3.0 / np.prod(shape[1:]))
    elif name.endswith(("norm.weight", "bn.weight", "running_var")) or (
        name.endswith(".weight") and name.split(".")[-2].startswith("_bn")
    ):
        u, scale = 1.0 + 0.2 * u, 1.0
    else:  # biases, LN shifts, spectral-norm vectors
        scale = 0.1
    return torch.tensor((u * scale).astype(np.float32).reshape(shape))


def load_formula(module, names):
    """Sets every tensor of `module`; `names` maps its PyTorch names to toonsmith's."""
    state = module.state_dict()
    for key in state:
        ours = names(key)
        if ours is None:
            continue
        state[key] = formula_tensor(ours, tuple(state[key].shape))
    module.load_state_dict(state)


# ---------------------------------------------------------------- networks (Fig. 10)
class ConvNormAct(nn.Module):
    """Conv, GroupNorm(1, C), leaky ReLU. `official`: TF-SAME reflect padding (a stride-2 3x3
    pads bottom/right only), no bias, epsilon 1e-12."""

    def __init__(s, i, o, k, stride=1, groups=1, norm=True, act=True, sn=False, official=False):
        super().__init__()
        s.conv = nn.Conv2d(i, o, k, stride, padding=0 if official else k // 2, groups=groups,
                           bias=not official)
        if sn:
            s.conv = nn.utils.spectral_norm(s.conv)
        s.norm = nn.GroupNorm(1, o, eps=1e-12 if official else 1e-5) if norm else None
        s.act = act
        total = k - stride
        s.pad = (total // 2, total - total // 2) * 2 if official else None

    def forward(s, x):
        if s.pad is not None:
            x = F.pad(x, s.pad, mode="reflect")
        x = s.conv(x)
        if s.norm is not None:
            x = s.norm(x)
        return F.leaky_relu(x, 0.2) if s.act else x


class ResBlock(nn.Module):
    def __init__(s):
        super().__init__()
        s.expand = ConvNormAct(256, 128, 1)
        s.depthwise = ConvNormAct(128, 128, 3, groups=128)
        s.project = ConvNormAct(128, 256, 1, act=False)

    def forward(s, x):
        return x + s.project(s.depthwise(s.expand(x)))


class Generator(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = ConvNormAct(3, 32, 7)
        s.down1 = ConvNormAct(32, 64, 3, 2)
        s.down1_conv = ConvNormAct(64, 64, 3)
        s.down2 = ConvNormAct(64, 128, 3, 2)
        s.down2_conv = ConvNormAct(128, 256, 3)
        s.res_blocks = nn.ModuleList([ResBlock() for _ in range(4)])
        s.neck = ConvNormAct(256, 128, 3)
        s.up1 = ConvNormAct(128, 128, 3)
        s.up1_conv = ConvNormAct(128, 128, 3)
        s.up2 = ConvNormAct(128, 64, 3)
        s.up2_conv1 = ConvNormAct(64, 64, 3)
        s.up2_conv2 = ConvNormAct(64, 64, 3)
        s.head = ConvNormAct(64, 32, 7)
        s.to_rgb = nn.Conv2d(32, 3, 1)

    def forward(s, x):
        x = s.down2_conv(s.down2(s.down1_conv(s.down1(s.stem(x)))))
        for b in s.res_blocks:
            x = b(x)
        x = s.neck(x)
        x = s.up1_conv(s.up1(F.interpolate(x, scale_factor=2, mode="nearest")))
        x = s.up2(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = s.head(s.up2_conv2(s.up2_conv1(x)))
        return torch.tanh(s.to_rgb(x))


def tf1_upsample(x):
    """TF1 legacy bilinear x2: source coordinate dst / 2, neighbours clamped at the edge."""
    for dim in (2, 3):
        size = x.shape[dim]
        src = torch.arange(2 * size, dtype=torch.float32) / 2
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=size - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = 2 * size
        frac = (src - lo).view(shape)
        a, b = x.index_select(dim, lo), x.index_select(dim, hi)
        x = a + (b - a) * frac
    return x


class InvertedResBlock(nn.Module):
    def __init__(s, c_in):
        super().__init__()
        s.expand = ConvNormAct(c_in, 2 * c_in, 1, official=True)
        s.depthwise = ConvNormAct(2 * c_in, 2 * c_in, 3, groups=2 * c_in, official=True)
        s.project = ConvNormAct(2 * c_in, 256, 1, act=False, official=True)

    def forward(s, x):
        y = s.project(s.depthwise(s.expand(x)))
        return x + y if x.shape[1] == y.shape[1] else y


class OfficialGenerator(nn.Module):
    def __init__(s):
        super().__init__()
        c = lambda i, o, k, st=1: ConvNormAct(i, o, k, st, official=True)
        s.stem, s.down1, s.down1_conv = c(3, 32, 7), c(32, 64, 3, 2), c(64, 64, 3)
        s.down2, s.down2_conv, s.pre_blocks = c(64, 128, 3, 2), c(128, 128, 3), c(128, 128, 3)
        s.blocks = nn.ModuleList([InvertedResBlock(128 if i == 0 else 256) for i in range(4)])
        s.post_blocks = c(256, 128, 3)
        s.up1, s.up1_conv = c(128, 128, 3), c(192, 128, 3)
        s.up2, s.up2_conv = c(128, 64, 3), c(96, 64, 3)
        s.head = c(64, 32, 7)
        s.to_rgb = nn.Conv2d(32, 3, 1, bias=False)

    def forward(s, x):
        full = s.stem(x)
        half = s.down1_conv(s.down1(full))
        x = s.pre_blocks(s.down2_conv(s.down2(half)))
        for b in s.blocks:
            x = b(x)
        x = s.up1(tf1_upsample(s.post_blocks(x)))
        x = s.up2(tf1_upsample(s.up1_conv(torch.cat([x, half], 1))))
        x = s.up2_conv(torch.cat([x, full], 1))
        return torch.tanh(s.to_rgb(s.head(x)))


class Discriminator(nn.Module):
    def __init__(s, c_in, channels, sn):
        super().__init__()
        layers, i = [], c_in
        for j, o in enumerate(channels):
            layers.append(ConvNormAct(i, o, 3, 1 if j == 0 else 2, sn=sn))
            i = o
        s.layers = nn.ModuleList(layers)
        s.out = nn.Conv2d(i, 1, 3, 1, 1)
        if sn:
            s.out = nn.utils.spectral_norm(s.out)

    def forward(s, x):
        for l in s.layers:
            x = l(x)
        return s.out(x)


def sn_names(key):
    """PyTorch spectral_norm names -> toonsmith's (weight_orig -> weight, weight_u -> u)."""
    if key.endswith("weight_v"):
        return None
    return key.replace("weight_orig", "weight").replace("weight_u", "u")


VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512]


def vgg19_features():
    layers, i = [], 3
    for v in VGG19:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(i, v, 3, padding=1), nn.ReLU()]
            i = v
    return nn.Sequential(*layers[:-1])  # conv4_4 before its ReLU


def vgg_names(key):
    """torchvision `features.{j}` -> toonsmith `convs.{i}`."""
    j, kind = key.split(".")
    convs = [n for n, v in enumerate(l for l in VGG19 for l in ([l] if l == "M" else [l, "R"]))]
    conv_positions = []
    pos = 0
    for v in VGG19:
        if v == "M":
            pos += 1
        else:
            conv_positions.append(pos)
            pos += 2
    return f"convs.{conv_positions.index(int(j))}.{kind}"


def vgg_input(x, mode):
    unit = (x + 1) / 2
    if mode == "torchvision":
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return (unit - mean) / std
    return unit.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


# ---------------------------------------------------------------- CTSS (Eqs. 1-6)
def box(x, r):
    return F.avg_pool2d(x, 2 * r + 1, 1, r, count_include_pad=False)


def guided(x, r, eps):
    m = box(x, r)
    c = box(x * x, r) - m * m
    a = c / (c + eps)
    b = m - a * m
    return box(a, r) * x + box(b, r)


PAPER_K = torch.tensor([[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
                        [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]], [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]]],
                       dtype=torch.float32)
OFFICIAL_K = torch.tensor([[[0, -1, 0], [0, 0, 0], [0, 1, 0]], [[0, 0, 0], [-1, 0, 1], [0, 0, 0]],
                           [[0, -1, 0], [0, 2, 0], [0, -1, 0]], [[0, 0, 0], [-1, 2, -1], [0, 0, 0]]],
                          dtype=torch.float32)


def edges(imgs, official, r, eps, d=0.2, n=2.0):
    g = guided(imgs, r, eps)
    if official:
        k = OFFICIAL_K[:, None].repeat(1, 3, 1, 1) * torch.tensor([1.0, 2.0, 1.0]).view(1, 3, 1, 1)
        e = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k).abs().sum(1, keepdim=True)
        mn, mx = e.min(), e.max()
    else:
        gray = g.mean(1, keepdim=True)
        e = F.conv2d(gray, PAPER_K[:, None]).abs().sum(1, keepdim=True)
        e = F.pad(e, (1, 1, 1, 1))
        mn = e.amin((2, 3), keepdim=True)
        mx = e.amax((2, 3), keepdim=True)
    e = (e - mn) / (mx - mn + 1e-8)
    return 1 - 1 / (1 + (e / d) ** n)


def ctss(imgs, official, k, l, s, r, eps):
    e = edges(imgs, official, r, eps)
    x = torch.cat([imgs, e], 1)
    p = x.unfold(2, l, s).unfold(3, l, s).permute(0, 2, 3, 1, 4, 5).reshape(-1, 4, l, l)
    score = p[:, 3].sum((1, 2))
    idx = score.topk(min(k, p.shape[0])).indices
    sel = p[idx, :3]
    if official:
        g = sel.sum(1, keepdim=True)
        lo = g.amin((2, 3), keepdim=True)
        hi = g.amax((2, 3), keepdim=True)
        g = (g - lo) / (hi - lo + 1e-8)
    else:
        g = (0.299 * sel[:, 0] + 0.587 * sel[:, 1] + 0.114 * sel[:, 2])[:, None]
    return e, idx, g


# ---------------------------------------------------------------- losses (Eqs. 7-17)
def yuv(x):
    x = (x + 1) / 2
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return y, 0.492 * (x[:, 2] - y), 0.877 * (x[:, 0] - y)


def color_loss(photo, fake):
    yp, up, vp = yuv(photo)
    yf, uf, vf = yuv(fake)
    return (yf - yp).abs().mean() + F.huber_loss(uf, up) + F.huber_loss(vf, vp)


def tv_loss(s):
    return ((s[..., 1:] - s[..., :-1]) ** 2).mean() + ((s[..., 1:, :] - s[..., :-1, :]) ** 2).mean()


def gram(f):
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def mean_std(f, c):
    def stats(t):
        n, ch = t.shape[:2]
        t = t.reshape(n, ch, -1)
        return t.mean(2), (t.var(2, unbiased=False) + 1e-5).sqrt()
    mf, sf = stats(f)
    mc, sc = stats(c)
    return (mf - mc).norm(dim=1).mean() + (sf - sc).norm(dim=1).mean()


# ---------------------------------------------------------------- inputs
def blocky_images(rng, n, h, w):
    """Piecewise-constant colour rectangles plus mild noise: images with real edges."""
    imgs = np.zeros((n, 3, h, w), np.float32)
    for i in range(n):
        imgs[i] = rng.uniform(-0.8, 0.8, (3, 1, 1))
        for _ in range(6):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            y1, x1 = y0 + rng.integers(6, h // 2), x0 + rng.integers(6, w // 2)
            imgs[i, :, y0:y1, x0:x1] = rng.uniform(-1, 1, (3, 1, 1))
    imgs += rng.normal(0, 0.03, imgs.shape).astype(np.float32)
    return torch.tensor(np.clip(imgs, -1, 1))


def main():
    rng = np.random.default_rng(20221)
    out = {}

    g = Generator().eval()
    load_formula(g, lambda k: k)
    x = torch.tensor(rng.uniform(-1, 1, (2, 3, 32, 40)).astype(np.float32))
    out["generator.input"], out["generator.output"] = x, g(x)
    g_official = OfficialGenerator().eval()
    load_formula(g_official, lambda k: k)
    out["generator_official.output"] = g_official(x)

    d_img = Discriminator(3, [32, 64, 128, 256], sn=True).train()
    load_formula(d_img, sn_names)
    x = torch.tensor(rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32))
    out["d_img.input"] = x
    out["d_img.output1"] = d_img(x)
    out["d_img.output2"] = d_img(x)  # after one more power iteration
    out["d_img.layers.0.conv.u"] = d_img.layers[0].conv.weight_u.clone()

    d_patch = Discriminator(1, [16, 32, 64, 128], sn=False)
    load_formula(d_patch, lambda k: k)
    x = torch.tensor(rng.uniform(0, 1, (3, 1, 24, 24)).astype(np.float32))
    out["d_patch.input"], out["d_patch.output"] = x, d_patch(x)
    # The same weights as a PyTorch state dict, to test toonsmith's .pth reader.
    torch.save(d_patch.state_dict(), os.path.join(os.path.dirname(OUT), "d_patch_formula.pth"))

    vgg = vgg19_features()
    load_formula(vgg, vgg_names)
    photo = torch.tensor(rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32))
    fake = torch.tanh(photo + torch.tensor(rng.normal(0, 0.3, photo.shape).astype(np.float32)))
    cartoon = torch.tensor(rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32))
    out["vgg.input"] = photo
    for mode in ["torchvision", "caffe"]:
        out[f"vgg.output_{mode}"] = vgg(vgg_input(photo, mode))

    imgs = blocky_images(rng, 2, 64, 64)
    out["ctss.input"] = imgs
    for r, eps in [(1, 1e-2), (5, 0.2)]:
        out[f"guided.r{r}"] = guided(imgs, r, eps)
    for name, official, k, s, r, eps in [("paper", False, 5, 20, 1, 1e-2), ("official", True, 4, 16, 5, 0.2)]:
        e, idx, gray = ctss(imgs, official, k, 32, s, r, eps)
        out[f"ctss.{name}.edges"] = e
        out[f"ctss.{name}.indices"] = idx.float()
        out[f"ctss.{name}.patches"] = gray

    # Losses on the VGG inputs (photo, fake, cartoon) and D scores.
    f_photo, f_fake, f_cart = (vgg(vgg_input(t, "torchvision")) for t in (photo, fake, cartoon))
    real_s = torch.tensor(rng.normal(0.8, 0.3, (2, 1, 4, 4)).astype(np.float32))
    fake_s = torch.tensor(rng.normal(0.2, 0.3, (2, 1, 4, 4)).astype(np.float32))
    edge_s = torch.tensor(rng.normal(0.4, 0.3, (2, 1, 4, 4)).astype(np.float32))
    real_p = torch.tensor(rng.normal(0.7, 0.3, (5, 1, 3, 3)).astype(np.float32))
    fake_p = torch.tensor(rng.normal(0.1, 0.3, (5, 1, 3, 3)).astype(np.float32))
    out.update({"loss.photo": photo, "loss.fake": fake, "loss.cartoon": cartoon,
                "loss.real_scores": real_s, "loss.fake_scores": fake_s, "loss.smoothed_scores": edge_s,
                "loss.real_patch_scores": real_p, "loss.fake_patch_scores": fake_p})
    lsd = lambda r, f: ((r - 1) ** 2).mean() + (f ** 2).mean()
    lsg = lambda f: ((f - 1) ** 2).mean()
    con = (f_photo - f_fake).abs().mean()
    col, tv = color_loss(photo, fake), tv_loss(fake)
    gl = (gram(f_fake) - gram(f_cart)).abs().mean()
    ms = mean_std(f_fake, f_cart)
    l_gen = 300 * lsg(fake_s) + 300 * lsg(fake_p) + 1.5 * con + 15 * col + 1 * tv
    l_dis = 300 * lsd(real_s, fake_s) + 300 * lsd(real_p, fake_p)
    losses = {"content": con, "color": col, "tv": tv, "gram": gl, "mean_std": ms,
              "lsgan_d": lsd(real_s, fake_s), "lsgan_g": lsg(fake_s),
              "edge_promoting_d": lsd(real_s, fake_s) + (edge_s ** 2).mean(),
              "l_gen": l_gen, "l_dis": l_dis}
    for k, v in losses.items():
        out[f"loss.value.{k}"] = v.reshape(1).float()

    # G at a size where toonsmith's host convolution takes its large-image algorithms
    # (F(4x4, 3x3) at full size, F(4x4, 2x2) for the upsampling to it), from a generator of its own so the tensors
    # above keep their values.
    x = torch.tensor(np.random.default_rng(20222).uniform(-1, 1, (1, 3, 160, 176)).astype(np.float32))
    out["generator.large.input"], out["generator.large.output"] = x, g(x)

    out = {k: v.contiguous().float().clone() for k, v in out.items()}
    save_file(out, OUT)
    print(f"wrote {len(out)} tensors to {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
