#!/usr/bin/env bash
# The one prepared GPU check: on a bare GPU machine (one H100 or H200, 16 cores), from the repository root,
# with .gpu/ carried (tests/benchmarks/gpu_carry.sh fills it here). Every figure is measured in this run
# beside its baseline; the summary is printed last and every log is kept in $OUT (at most 8 files).
#
#   PARTS=train bash tests/benchmarks/bench_gpu.sh       # there, first call (~5 min on an H200-class node)
#   PARTS=extract bash tests/benchmarks/bench_gpu.sh     # there, second call (~6 min); PARTS="train extract": both
#   SETUP=0 DEVICE=cpu SCALE=0.001 EPOCHS=1 STEPS=1 BIG_BATCH=8 SLOW=4 \
#     FEED="--seconds 10 --unique 2 --videos 12 --shard-videos 2 --videos-per-call 2 \
#     --clip-model tests/data/ViT-avaf-tiny.json" \
#     TSPM=0 COMPILE=0 bash tests/benchmarks/bench_gpu.sh  # the rehearsal on a CPU (installed avaf, no carry)
#
# The parts, each under its own time limit so that one that hangs costs only its own figures:
#   machine: GPU, driver, cores, torch, PyAV, Ray, and the tests marked gpu (machine.log)
#   train: a store of MUSIC-AVQA's shape at SCALE (bench_scale.py --store-only), a profile of a step at
#     BIG_BATCH (bench_train_step.py --profile), then avaf-train end to end at batch 32 (the recipe), at
#     BIG_BATCH and at BIG_BATCH with --compile, each beside the steps alone, the measured matrix-product
#     ceiling and the FLOPs counted per question (bench_train_e2e.py; train.log, train-*.json)
#   extract: avaf-extract on local Ray against the cores' decode rate at 360p and 720p, then with NVDEC at
#     360p (bench_feed.py), NVDEC decodes k at a time on threads against k processes (bench_nvdec.py; all in
#     feed.log), and the tspm pack at 360p (tspm.log)
#   summary.md: each part's figures, printed last
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-out/gpu}
WORK=${WORK:-/tmp/avaf-bench}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-0.5}
EPOCHS=${EPOCHS:-3}
STEPS=${STEPS:-20}
BIG_BATCH=${BIG_BATCH:-128}
FEED=${FEED:-}
TSPM=${TSPM:-1}
COMPILE=${COMPILE:-1}
SETUP=${SETUP:-1}
PARTS=${PARTS:-train extract}
SLOW=${SLOW:-1} # each part's time limit is multiplied by this (a CPU rehearsal: 4)
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
began=$(date +%s)

if [[ $SETUP == 1 ]]; then
    # shellcheck source=tests/benchmarks/gpu_setup.sh
    source tests/benchmarks/gpu_setup.sh 2>&1 | tee "$OUT/machine.log" || exit 1
    source tests/benchmarks/gpu_setup.sh >/dev/null 2>&1 # the exports, in this shell (the install is done)
fi

part() { # part NAME SECONDS COMMAND...: run it under its limit, its output into NAME.log, never stop the script
    local name=$1 limit=$(($2 * SLOW))
    shift 2
    echo "=== $name ($(($(date +%s) - began)) s in; limit $limit s): $*" | tee -a "$OUT/$name.log"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $(($(date +%s) - began)) s" | tee -a "$OUT/$name.log"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
    echo "cores: $(nproc); memory: $(free -g | awk '/Mem/ {print $2}') GB; disk free: $(df -h "$WORK" | awk 'NR == 2 {print $4}')"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
    python3 -c 'import av, ray; print("PyAV", av.__version__, "FFmpeg", av.library_versions["libavcodec"], "ray", ray.__version__)'
} 2>&1 | tee -a "$OUT/machine.log"
if [[ $DEVICE == cuda* ]]; then # the GPU's own tests: no training step waits for the queue, NVDEC's frames
    part machine 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_train_gpu.py \
        tests/test_decode_gpu.py tests/test_decode_fast.py
fi

if [[ " $PARTS " == *" train "* ]]; then
    part train 150 python3 tests/benchmarks/bench_scale.py --dir "$WORK/store" --scale "$SCALE" --store-only
    part train 60 python3 tests/benchmarks/bench_train_step.py --device "$DEVICE" --batch "$BIG_BATCH" \
        --steps "$STEPS" --profile 25 # where a step's time goes
    for batch in 32 "$BIG_BATCH"; do
        part train 150 python3 tests/benchmarks/bench_train_e2e.py --feats "$WORK/store/feats.h5" \
            --epochs "$EPOCHS" --device "$DEVICE" --batch "$batch" --step-samples "$STEPS" \
            --out "$WORK/run-$batch" --json "$OUT/train-$batch.json"
    done
    if [[ $COMPILE == 1 ]]; then # last: compiling may take its whole limit
        part train 200 python3 tests/benchmarks/bench_train_e2e.py --feats "$WORK/store/feats.h5" \
            --epochs "$EPOCHS" --device "$DEVICE" --batch "$BIG_BATCH" --step-samples "$STEPS" --compile \
            --out "$WORK/run-compiled" --json "$OUT/train-compiled.json"
    fi
    rm -rf "$WORK/store" # its disk, for the clips
fi

if [[ " $PARTS " == *" extract "* ]]; then
    # shellcheck disable=SC2086 # FEED is a list of flags
    part feed 240 python3 tests/benchmarks/bench_feed.py --workdir "$WORK/feed" --sizes 640x360,1280x720 $FEED
    if [[ $DEVICE == cuda* ]]; then
        # shellcheck disable=SC2086
        part feed 120 python3 tests/benchmarks/bench_feed.py --workdir "$WORK/feed" --sizes 640x360 \
            --decoders pyav-cuda $FEED
        part feed 120 python3 tests/benchmarks/bench_nvdec.py --clips "$WORK/feed/640x360/clips" --k 1,8 \
            --per-worker 3
    fi
    if [[ $TSPM == 1 ]]; then
        part tspm 120 python3 tests/benchmarks/bench_feed.py --workdir "$WORK/feed" --sizes 640x360 \
            --features tspm --videos 64
    fi
fi

{
    echo "# bench_gpu.sh, $(date -u +%F), $(($(date +%s) - began)) s"
    echo
    grep -h -E '^(NVIDIA|name|cores|torch|PyAV|[0-9]+ (passed|failed)|FAILED|=+ .*(passed|failed))' "$OUT/machine.log"
    for name in train feed tspm; do
        [[ -f $OUT/$name.log ]] || continue
        echo
        echo "## $name"
        # the reports' own lines: bench_train_e2e's from "device" to its projection, bench_feed's and
        # bench_nvdec's tables, the store's size, each part's exit (not avaf-train's results tables)
        awk '/^== bench_train_e2e|^profile / {on = 1} on || /^(machine:|pyav-cuda|\||  store|  write|=== .*exit)/ {print}
             /^30 epochs, projected|^Self (CPU|CUDA) time total/ {on = 0}' "$OUT/$name.log" |
            grep -v -E '^\| (Method|val|test) \||^\|---\|---:\|---:\|---:\|---:\|---:\|---:\|---:\|---:\|---:'

    done
} >"$OUT/summary.md"
cat "$OUT/summary.md"
