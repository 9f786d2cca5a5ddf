#!/usr/bin/env bash
# End-to-end on a lent GPU machine: the toonsmith program itself (a `cuda-untuned` build,
# `gzip -c target/release/toonsmith > .dev/toonsmith-untuned.gz`, with a CubeCL cache
# `.dev/cubecl-cache.tgz` from scripts/gpu-check.sh if there is one): info, cartoonize in f32
# and f16 (one photo, a folder of six 1920x1080 photos), the refusals of --precision, and a
# short video where ffmpeg is installed. Outputs under $OUT. From the repository root:
#   bash scripts/gpu-e2e.sh
set -u
OUT=${OUT:-/tmp/e2e}; mkdir -p "$OUT"
NV=$(python3 -c 'import nvidia,os;print(os.path.dirname(nvidia.__path__[0]))')/nvidia/cu13/lib
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$NV
gunzip -c .dev/toonsmith-untuned.gz > /tmp/toonsmith && chmod +x /tmp/toonsmith
mkdir -p .dev && tar xzf .dev/cubecl-cache.tgz -C .dev
cat > cubecl.toml <<TOML
[autotune]
cache = { file = "$PWD/.dev/cubecl-cache" }
[compilation]
cache = { file = "$PWD/.dev/cubecl-cache" }
TOML
T=/tmp/toonsmith
run() {
    echo "== $*"
    local s; s=$(date +%s%N)
    timeout 120 "$@" 2>&1 | tail -4
    echo "rc=${PIPESTATUS[0]} wall=$(( ($(date +%s%N) - s) / 1000000 )) ms"
}
run $T info
run $T cartoonize examples/sunset.jpg --out "$OUT/f32.png" --no-post
run $T cartoonize --precision f16 examples/sunset.jpg --out "$OUT/f16.png" --no-post
python3 -c "
import numpy as np, torch
from torchvision.io import read_image, write_png
import torch.nn.functional as F
x = read_image('examples/sunset.jpg').float().unsqueeze(0)
y = F.interpolate(x, size=(1080, 1920), mode='bilinear', align_corners=False).clamp(0,255).round().byte()[0]
write_png(y, '/tmp/hd.png')
print('hd', y.shape)
" 2>&1 | tail -1
mkdir -p /tmp/many && for i in 1 2 3 4 5 6; do cp /tmp/hd.png /tmp/many/hd$i.png; done
run $T cartoonize /tmp/many --out "$OUT/many32" --no-post
run $T cartoonize --precision f16 /tmp/many --out "$OUT/many16" --no-post
cp /tmp/hd.png "$OUT/hd.png"
run $T train --precision f16
run $T cartoonize --precision half examples/sunset.jpg
if command -v ffmpeg >/dev/null; then
  ffmpeg -loglevel error -y -loop 1 -i /tmp/hd.png -t 2 -r 12 -pix_fmt yuv420p /tmp/clip.mp4
  run $T video /tmp/clip.mp4 --out "$OUT/clip.mp4"
else echo "no ffmpeg here"; fi
ls -la "$OUT" "$OUT"/many32 | head -20
