#!/usr/bin/env bash
# The GPU measurements of stdet in one run: the training path under torchrun on CUDA, every zoo
# config's full-size step, the channels_last / torch.compile variants, MMAction2 on the same card,
# and the data workers one GPU needs. Every step's output goes to $OUT/suite.txt under a header,
# one line per step (exit code, seconds) to $OUT/summary.txt, and the training run's log to
# $OUT/train_log.jsonl; a failing step, or one over its time limit, does not stop the others.
#
#   OUT=out bash benchmarks/gpu_suite.sh              # on a machine with a CUDA GPU
#   OUT=out bash benchmarks/gpu_suite.sh --dry-run    # the same steps, tiny, on the CPU
#   ONLY="mmaction2_speed compile_slowfast" OUT=out bash benchmarks/gpu_suite.sh   # some steps
#
# On one H200 the steps took 7 (environment), 141 (every config), 2 + 41 + 10 (data, torchrun
# train, test), 45 (MMAction2), 33 + 27 (channels_last), 73 (compile) and 30 s (data workers).
#
# Nothing is fetched from the internet. MMAction2 and its pure-Python dependencies come as wheels
# in .whl/ (see benchmarks/compare_mmaction2.py for the list), installed offline into /tmp/site;
# torch, numpy, OpenCV and the rest are the machine's own. Without them the MMAction2 step says so.
set -u
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-gpu_suite_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

LOG="$OUT/suite.txt"
: > "$LOG"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output appended to $LOG
    local name=$1 limit=$2 start rc
    shift 2
    # ONLY="name ..." runs just those steps (a rerun of the ones that failed)
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && return 0
    start=$(date +%s)
    echo "== $name: $*" | tee -a "$LOG"
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 30
    rc=${PIPESTATUS[0]}
    echo "$name rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a "$SUMMARY" "$LOG"
}

if ls .whl/*.whl > /dev/null 2>&1; then
    if [ "$DRY" = 0 ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
        # the 1.2.0 wheel lacks mmaction/models/localizers/drn/, which mmaction.models imports
        D=/tmp/site/mmaction/models/localizers/drn
        mkdir -p "$D" && touch "$D/__init__.py" && echo "DRN = None" > "$D/drn.py"
        # its multimodal models import names transformers 5 no longer has; they are not measured
        sed -i 's/^WITH_MULTIMODAL = all(/WITH_MULTIMODAL = False and all(/' \
            /tmp/site/mmaction/utils/dependency.py
    fi
fi

SLOWFAST=slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb
ACRN=slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb
SLOWONLY=slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb
DATA=/tmp/gpu_suite_ava
if [ "$DRY" = 1 ]; then
    DEVICE=cpu; SIZE="--batch 1 --steps 1 --warmup 0 --no-peak"; ALL="$SLOWONLY"; BATCH=1
    FRAMES="width=160, height=120"; WORKERS="0 1"; DATA_ARGS="--quick"
else
    DEVICE=cuda; SIZE="--steps 8 --warmup 3"; ALL="--all"; BATCH=""
    FRAMES="width=640, height=360"; WORKERS="1 8 16"; DATA_ARGS="--min-seconds 2 --no-reduced-decode"
fi

step environment 30 bash -c "nvidia-smi || true; $PY -c 'import torch, sys; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", \
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\")'"

# 1. every zoo config's full-size training step (bf16 autocast on CUDA), measured peak, MFU
step train_step_all 230 $PY benchmarks/gpu_train_step.py $ALL --device "$DEVICE" $SIZE

# 2. the training and test path as a user runs it: torchrun, DataLoader workers, pinned memory,
# bf16, fused SGD, NCCL; on AVA-sized frames in the mini-AVA layout
step make_data 60 $PY -c "from stdet.data.mini_ava import MiniAVASpec, generate_mini_ava; \
generate_mini_ava('$DATA', seed=0, spec=MiniAVASpec(train_videos=2, val_videos=1, seconds=12, \
$FRAMES), progress=False)"
OPTIONS="model.backbone.pretrained=None data.version=2.2 data.workers=4 runtime.log_interval=1"
[ "$DRY" = 1 ] && OPTIONS="$OPTIONS optim.batch_per_gpu=1 data.workers=1"
step torchrun_train 100 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m stdet train "$SLOWFAST" \
    --data-root "$DATA" --work-dir /tmp/gpu_suite_work --max-iters 3 --device "$DEVICE" \
    --cfg-options $OPTIONS
cp /tmp/gpu_suite_work/log.jsonl "$OUT/train_log.jsonl" 2> /dev/null
step test 60 $PY -m stdet test "$SLOWFAST" /tmp/gpu_suite_work/latest.pth --eval mAP \
    --data-root "$DATA" --out /tmp/gpu_suite_work/results.csv --device "$DEVICE" \
    --cfg-options $OPTIONS

# 3. MMAction2's backbones on the same card, at the reference per-GPU batch
step mmaction2_speed 120 $PY benchmarks/mmaction2_speed.py --device "$DEVICE" \
    ${BATCH:+--batch $BATCH} $( [ "$DRY" = 1 ] && echo "--steps 1 --warmup 0" || echo "--steps 8 --warmup 3" )

# 4. the runtime switches on the two SlowFast R50 8x8 models
for name in "$SLOWFAST" "$ACRN"; do
    step "channels_last_${name%%_*}_$( [ "$name" = "$ACRN" ] && echo acrn || echo base )" 40 \
        $PY benchmarks/gpu_train_step.py "$name" --device "$DEVICE" $SIZE --channels-last --no-peak
done
[ "$DRY" = 0 ] && step compile_slowfast 150 $PY benchmarks/gpu_train_step.py "$SLOWFAST" \
    --device "$DEVICE" $SIZE --compile --no-peak

# 5. data workers one GPU needs, from this card's clips/s of the two configs the benchmark loads
clips() {  # clips/s of config $1 in the train_step_all table (column 8)
    awk -F'|' -v c="$1" '$2 ~ c {gsub(/ /, "", $8); print $8; exit}' "$LOG"
}
GPU=""
for name in "$SLOWONLY" "$SLOWFAST"; do
    rate=$(clips "$name")
    [ -n "$rate" ] && GPU="$GPU --gpu-clips-per-s $rate"
done
step data_throughput 90 $PY benchmarks/data_throughput.py --sources rawframes \
    --workers $WORKERS $DATA_ARGS $GPU
cat "$SUMMARY"
