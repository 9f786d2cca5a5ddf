#!/usr/bin/env bash
# The GPU checks of one lent-device session, in priority order under one deadline (the device
# time is short): toonsmith's forward and training children, the PyTorch reference on the same
# card, an A/B against a baseline binary, and CubeCL's per-kernel profile.
#
# Prepared here (no Rust toolchain on the GPU machine), all at once by `bash scripts/gpu-prepare.sh`:
#   cargo bench --features cuda --bench speed --no-run      # prints the binary's path
#   gzip -c target/release/deps/speed-<hash> > .dev/speed-new.gz   (optional: .dev/speed-base.gz)
#   cargo bench --features cuda-untuned --bench speed --no-run  # no autotuning: fast first call
#   gzip -c target/release/deps/speed-<hash> > .dev/speed-untuned.gz
#   cargo build --release --features cuda-untuned --example gpu_conv --example gpu_train_check
#   gzip -c target/release/examples/gpu_conv > .dev/gpu_conv-untuned.gz
#   gzip -c target/release/examples/gpu_train_check > .dev/gpu_train_check-untuned.gz
#   gzip -c target/release/examples/gpu_precision > .dev/gpu_precision-untuned.gz (the
#   implicit-precision step; build it with the two above)
#   (likewise --example gpu_matmul -> .dev/gpu_matmul-untuned.gz)
#   cp ../shared/reference/tsa_pytorch.py .dev/
# Run there from the repository root: DEADLINE=480 [STEPS="..."] [MIN_LIMIT=300]
# scripts/gpu-check.sh (logs under $OUT). The children print each timed call to stderr as it
# ends, so a step cut by its limit still shows how far it got.
set -u
DEV=${DEV:-.dev}
OUT=${OUT:-/tmp/gpu-check}
DEADLINE=${DEADLINE:-480}
MIN_LIMIT=${MIN_LIMIT:-0}   # raise every step's own limit to at least this (a cold warm-up)
mkdir -p "$OUT"
NV=$(python3 -c 'import nvidia,os;print(os.path.dirname(nvidia.__path__[0]))')/nvidia/cu13/lib
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$NV
LOG=$OUT/log.txt
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv | tee "$LOG"
for gz in "$DEV"/*.gz; do
    gunzip -c "$gz" > "${gz%.gz}" && chmod +x "${gz%.gz}"
done

# CubeCL's autotune results and compiled PTX go to $DEV/cubecl-cache (a cubecl.toml in the
# working directory says so) and come back as $OUT/cubecl-cache.tgz. Put that file in $DEV
# before the next session's call: its warm-up then skips the tuning and the NVRTC compiles.
CACHE=$DEV/cubecl-cache
[ -f "$DEV/cubecl-cache.tgz" ] && tar xzf "$DEV/cubecl-cache.tgz" -C "$DEV"
# The profile steps' CUBECL_DEBUG_OPTION=profile sets the level; stdout is where it goes.
[ -f cubecl.toml ] || cat > cubecl.toml <<TOML
[autotune]
cache = { file = "$CACHE" }
[compilation]
cache = { file = "$CACHE" }
[profiling]
logger = { stdout = true }
TOML

# step NAME LIMIT_S CMD...: runs CMD under min(LIMIT_S, time left), output to $OUT/NAME.txt
# when NAME starts with "profile" (one file each), else appended to the common log.
step() {
    local name=$1 limit=$2 left=$((DEADLINE - SECONDS))
    shift 2
    [ "$left" -lt 20 ] && { echo "== $name skipped (deadline)" | tee -a "$LOG"; return; }
    [ "$limit" -lt "$MIN_LIMIT" ] && limit=$MIN_LIMIT
    [ "$limit" -gt "$left" ] && limit=$left
    local start=$SECONDS file=$LOG
    [[ $name == profile* ]] && file=$OUT/$name.txt
    echo "== $name (limit ${limit}s)" | tee -a "$LOG"
    timeout "$limit" "$@" >> "$file" 2>&1
    local rc=$?
    echo "== $name rc=$rc wall=$((SECONDS - start))s" | tee -a "$LOG"
    [ "$file" = "$LOG" ] && tail -n 4 "$LOG" | grep -v "^==" || true
}

NEW=$DEV/speed-new
UNTUNED=$DEV/speed-untuned
BASE=$DEV/speed-base
PROFILE="env CUBECL_DEBUG_OPTION=profile"
# The forward children first run G layer by layer, printing where the first call's time goes.
export TOONSMITH_BENCH_WARMUP_STEPS=${TOONSMITH_BENCH_WARMUP_STEPS:-1}
# STEPS: which checks to run, in this order; a step name ending in "+ln" runs its step with
# LN's sums by toonsmith's CubeCL kernels (`TOONSMITH_GPU_LN=cube`, `kernels::ln_cube`), and
# one ending in "+wg" (before or after "+ln") with the training weight gradients by CubeCL's
# implicit GEMM (`TOONSMITH_GPU_WGRAD=implicit`, `kernels::implicit_gemm::weight_grad`). By
# default the untuned binary (its first call compiles one kernel per shape, so figures come
# within the budget): the per-layer check and tables at 1080p (gathered windows, CubeCL's
# implicit GEMM and burn's against burn on the CPU, then ms per layer, then the implicit GEMM's
# candidate algorithms side by side), two training iterations with the implicit GEMM (weight
# gradients too) and the LN kernels against the CPU's (every loss; `examples/gpu_train_check`),
# the forward at 1080p with gathered windows or the implicit GEMM (`TOONSMITH_GPU_CONV=implicit`,
# algorithm `TOONSMITH_GPU_IMPLICIT`, `kernels::implicit_gemm`), each with and without the LN
# kernels, the training step with gathered windows, with the LN kernels, with the implicit GEMM
# and the LN kernels, and with the implicit weight gradients as well (with either convolution),
# PyTorch's, the implicit GEMM's f16 (`--precision f16`: its cartoon against f32's on a photo,
# `examples/gpu_precision`, then its 1080p forward), profiles of the all-CubeCL paths, the
# 256x256 forwards. Others: f16
# forwards, `precision` (f16's difference from f32 on a photo), `gemm-*` profiles, `base-*`
# (`.dev/speed-base`, an earlier build, in the same call), `new-*` (the autotuned build: first
# calls tune for minutes), the per-layer table at training shapes (`conv-layers-train`).
STEPS=${STEPS:-"conv-layers-1080 implicit-train-check+ln+wg gemm-forward-1080 gemm-forward-1080+ln implicit-forward-1080 implicit-forward-1080+ln gemm-train-b8 gemm-train-b8+ln implicit-train-b8+ln implicit-train-b8+ln+wg gemm-train-b8+ln+wg pytorch-train pytorch-1080 implicit-precision implicit-f16-forward-1080+ln profile-implicit-train-b8+ln+wg profile-implicit-forward-1080+ln implicit-forward-256+ln gemm-forward-256"}
CONV=$DEV/gpu_conv-untuned
for s in $STEPS; do
    unset TOONSMITH_GPU_LN TOONSMITH_GPU_WGRAD
    base=$s
    while [[ $base == *+* ]]; do
        case ${base##*+} in
            ln) export TOONSMITH_GPU_LN=cube ;;
            wg) export TOONSMITH_GPU_WGRAD=implicit ;;
            *) echo "unknown suffix in $s" | tee -a "$LOG" ;;
        esac
        base=${base%+*}
    done
    case $base in
        gemm-forward-256) step "$s" 60 "$UNTUNED" --child-forward 256 256 ;;
        gemm-forward-1080) step "$s" 90 "$UNTUNED" --child-forward 1080 1920 ;;
        gemm-train-b8) step "$s" 200 "$UNTUNED" --child-train 8 ;;
        f16-forward-1080) step "$s" 90 env TOONSMITH_GPU_PRECISION=f16 "$UNTUNED" --child-forward 1080 1920 ;;
        f16-forward-256) step "$s" 60 env TOONSMITH_GPU_PRECISION=f16 "$UNTUNED" --child-forward 256 256 ;;
        profile-f16-forward-1080) step "$s" 60 env TOONSMITH_GPU_PRECISION=f16 $PROFILE "$UNTUNED" --child-forward 1080 1920 ;;
        matmul) step "$s" 60 "$DEV/gpu_matmul-untuned" ;;
        precision) step "$s" 60 "$DEV/gpu_precision-untuned" ;;
        implicit-precision) step "$s" 60 env TOONSMITH_GPU_CONV=implicit "$DEV/gpu_precision-untuned" ;;
        implicit-f16-forward-1080) step "$s" 90 env TOONSMITH_GPU_CONV=implicit TOONSMITH_GPU_PRECISION=f16 "$UNTUNED" --child-forward 1080 1920 ;;
        implicit-f16-forward-256) step "$s" 60 env TOONSMITH_GPU_CONV=implicit TOONSMITH_GPU_PRECISION=f16 "$UNTUNED" --child-forward 256 256 ;;
        gemm-ops-train-b8) step "$s" 120 env TOONSMITH_GPU_CONV=gemm-ops "$UNTUNED" --child-train 8 ;;
        conv-layers-1080) step "$s" 150 "$CONV" 1080 1920 1 --forward-only ;;
        train-check) step "$s" 90 "$DEV/gpu_train_check-untuned" 256 2 ;;
        conv-layers-train) step "$s" 90 "$CONV" 256 256 8 ;;
        profile-gemm-forward-1080) step "$s" 60 $PROFILE "$UNTUNED" --child-forward 1080 1920 ;;
        profile-gemm-train-b8) step "$s" 90 $PROFILE "$UNTUNED" --child-train 8 ;;
        burn-forward-1080) step "$s" 60 env TOONSMITH_GPU_CONV=burn "$UNTUNED" --child-forward 1080 1920 ;;
        implicit-train-check) step "$s" 90 env TOONSMITH_GPU_CONV=implicit "$DEV/gpu_train_check-untuned" 256 2 ;;
        implicit-forward-1080) step "$s" 90 env TOONSMITH_GPU_CONV=implicit "$UNTUNED" --child-forward 1080 1920 ;;
        implicit-forward-256) step "$s" 60 env TOONSMITH_GPU_CONV=implicit "$UNTUNED" --child-forward 256 256 ;;
        implicit-train-b8) step "$s" 200 env TOONSMITH_GPU_CONV=implicit "$UNTUNED" --child-train 8 ;;
        profile-implicit-forward-1080) step "$s" 60 env TOONSMITH_GPU_CONV=implicit $PROFILE "$UNTUNED" --child-forward 1080 1920 ;;
        profile-implicit-train-b8) step "$s" 90 env TOONSMITH_GPU_CONV=implicit $PROFILE "$UNTUNED" --child-train 8 ;;
        implicit-conv-layers-train) step "$s" 90 env TOONSMITH_GPU_CONV=implicit "$CONV" 256 256 8 ;;
        burn-train-b8) step "$s" 90 env TOONSMITH_GPU_CONV=burn "$UNTUNED" --child-train 8 ;;
        tuned-gemm-forward-1080) step "$s" 140 env TOONSMITH_GPU_CONV=gemm "$NEW" --child-forward 1080 1920 ;;
        tuned-gemm-train-b8) step "$s" 200 env TOONSMITH_GPU_CONV=gemm "$NEW" --child-train 8 ;;
        new-forward-1080) step "$s" 140 "$NEW" --child-forward 1080 1920 ;;
        new-forward-256) step "$s" 90 "$NEW" --child-forward 256 256 ;;
        new-train-b8) step "$s" 200 "$NEW" --child-train 8 ;;
        pytorch) step "$s" 150 python3 "$DEV/tsa_pytorch.py" --device cuda --batch 8 --sizes 256x256,1080x1920 ;;
        pytorch-train) step "$s" 90 python3 "$DEV/tsa_pytorch.py" --device cuda --batch 8 --sizes 256x256 ;;
        pytorch-1080) step "$s" 90 python3 "$DEV/tsa_pytorch.py" --device cuda --no-train --sizes 1080x1920 ;;
        base-forward-1080) [ -x "$BASE" ] && step "$s" 90 "$BASE" --child-forward 1080 1920 ;;
        base-train-b8) [ -x "$BASE" ] && step "$s" 120 "$BASE" --child-train 8 ;;
        profile-forward-1080) step "$s" 90 $PROFILE "$NEW" --child-forward 1080 1920 ;;
        profile-train-b8) step "$s" 120 $PROFILE "$NEW" --child-train 8 ;;
        *) echo "unknown step $s" | tee -a "$LOG" ;;
    esac
done
[ -d "$CACHE" ] && tar czf "$OUT/cubecl-cache.tgz" -C "$DEV" cubecl-cache
for profile in "$OUT"/profile-*.txt; do
    [ -f "$profile" ] || continue
    echo "== $(basename "$profile")" | tee -a "$LOG"
    python3 "$(dirname "$0")/profile-summary.py" "$profile" | tee -a "$LOG"
done
echo "total ${SECONDS}s" | tee -a "$LOG"
grep "rc=\|warm-up\|run [0-9]\|step [0-9]*:\|^[0-9.]* [0-9.]* [0-9.]*$\|_ms_" "$LOG"
