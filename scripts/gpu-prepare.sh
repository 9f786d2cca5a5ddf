#!/usr/bin/env bash
# Builds, here, what scripts/gpu-check.sh runs on a lent GPU machine (which has no Rust
# toolchain): the `cuda-untuned` bench and the GPU examples, gzipped into .dev/, with the PyTorch
# reference beside them; then prints the sizes against the 64 MiB a device call carries.
#
#     bash scripts/gpu-prepare.sh            # 24 minutes on 2 cores from a target/ with only
#                                            # the default build in it (the bench 15, the
#                                            # examples 8.5), less when CUDA's builds are warm
#     TUNED=1 bash scripts/gpu-prepare.sh    # also the autotuned `cuda` bench (speed-new.gz,
#                                            # for the `new-*` steps; 7 MiB more gzipped)
#
# Then, as one device call from the repository root: `DEADLINE=400 bash scripts/gpu-check.sh`
# with carry [".dev"] and timeout_s 430, and give the machine back.
set -euo pipefail
DEV=${DEV:-.dev}
REFERENCE=${REFERENCE:-../shared/reference/tsa_pytorch.py}
mkdir -p "$DEV"

# The executables a cargo invocation built, by target name, from its JSON messages.
executable() {
    python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and m.get("executable"):
        print(m["executable"])
' "$1"
}

# Stripped of symbols (panic messages keep their text): 14.7 -> 12.8 MiB gzipped for gpu_conv.
pack() { # pack EXECUTABLE NAME
    [ -n "$1" ] || { echo "gpu-prepare: no executable for $2" >&2; exit 1; }
    strip -o "$DEV/$2" "$1"
    gzip -c "$DEV/$2" > "$DEV/$2.gz"
    rm "$DEV/$2"
    echo "$DEV/$2.gz from $1"
}

bench() { # bench FEATURES NAME
    local json
    json=$(cargo bench --features "$1" --bench speed --no-run --message-format=json)
    pack "$(executable speed <<<"$json" | tail -1)" "$2"
}

bench cuda-untuned speed-untuned
json=$(cargo build --release --features cuda-untuned --message-format=json \
    --example gpu_conv --example gpu_train_check --example gpu_precision)
for example in gpu_conv gpu_train_check gpu_precision; do
    pack "$(executable "$example" <<<"$json" | tail -1)" "$example-untuned"
done
[ "${TUNED:-0}" = 1 ] && bench cuda speed-new

if [ -f "$REFERENCE" ]; then
    install -m 644 "$REFERENCE" "$DEV/"
else
    echo "gpu-prepare: $REFERENCE not found: the pytorch-* steps will fail" >&2
fi

# What a device call carries: the work tree git would copy plus .dev.
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
dev=$(du -sb "$DEV" | cut -f1)
printf 'work tree %.1f MiB + %s %.1f MiB = %.1f MiB of 64\n' \
    "$(bc -l <<<"$tree / 1048576")" "$DEV" "$(bc -l <<<"$dev / 1048576")" \
    "$(bc -l <<<"($tree + $dev) / 1048576")"
[ $((tree + dev)) -lt $((64 * 1048576)) ] || { echo "gpu-prepare: over 64 MiB" >&2; exit 1; }
