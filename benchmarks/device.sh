#!/usr/bin/env bash
# Every GPU measurement of the open targets in one prepared run, for a session lent a GPU machine
# (the `device` tool: one H200, about 15 minutes of device time, one command of at most 10):
# the Triton vote's share of the measured memory bandwidth (benchmarks/aggregate.py), training
# throughput and MFU of a BERT-base-sized member in bf16 at sequence 128 (benchmarks/mfu.py,
# eager, then torch.compile), end-to-end prediction throughput against per-member pipelines
# (benchmarks/predict.py), and the kernel tests compiled for the GPU.
#
# Here, once (the device gets the checkout, not ../shared/data):
#   mkdir -p .devdata/cs224n && cp ../shared/data/cs224n/ids-{sst,cfimdb}-{train,dev}.csv .devdata/cs224n/
# Then one call:  run(command="bash benchmarks/device.sh", carry=[".devdata"], timeout_s=600)
#
# The machine's own python3 and packages run the code from src/ (no install: nothing can be
# fetched there). Stages run in order of importance, each under its own cap, and none starts
# once BUDGET seconds (default 540) are spent, so a slow stage costs the stages after it, never
# the results before it. Results: $OUT/device.log (every stage's output) and the JSON files
# sweep.json, mfu.json, mfu-compile.json, aggregate.json, predict-bf16.json, profile.json in $OUT.
# The machine stays warm for 30 s after a call: have the next command ready, or give it back.
#
# STAGES="sweep tests-short profile" (say) runs those stages only, in that order; the full
# kernel test file (stage tests) takes over two minutes compiled.
#
# SMOKE=1 runs the same stages at toy sizes on a CPU (the kernel through Triton's interpreter):
# a check of this script, not a measurement (tests/test_benchmarks.py runs it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device}
BUDGET=${BUDGET:-540}
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ENSEMBLE_DATA=${ENSEMBLE_DATA:-$PWD/.devdata}
LOG="$OUT/device.log"
start=$SECONDS

# stage NAME CAP COMMAND...: COMMAND under min(CAP, seconds left), its output appended to the log;
# the last lines (the tables) are printed.
stage() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - (SECONDS - start)))
    if ((left < 20)); then
        echo "== $name: not started, ${left}s of ${BUDGET}s left" | tee -a "$LOG"
        return
    fi
    ((cap > left)) && cap=$left
    echo "== $name (at most ${cap}s): $*" | tee -a "$LOG"
    local t0=$SECONDS part="$OUT/.$name.part"
    timeout --signal=INT --kill-after=15 "$cap" "$@" >"$part" 2>&1
    local rc=$?
    cat "$part" >>"$LOG"
    grep -v $'\r' "$part" | tail -n 24
    rm -f "$part"
    echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
}

if [[ ! -f "$ENSEMBLE_DATA/cs224n/ids-sst-train.csv" ]]; then
    echo "error: $ENSEMBLE_DATA/cs224n holds no ids-sst-train.csv; copy the data first (see the top of $0)" >&2
    exit 2
fi

# STAGES picks and orders the stages. The default is what the next session lent a GPU should
# measure first: the kernel sweep (relaxed atomics, unmeasured), the kernel tests on the GPU,
# training MFU eager (pinned, non-blocking batches, unmeasured) and compiled, then the full voting
# table and prediction. (Measured on 2026-12-04: benchmarks/RESULTS.md, On an H200.)
STAGES=${STAGES:-env sweep tests-short mfu mfu-compile aggregate predict}
for name in $STAGES; do
    if [[ $SMOKE == 1 ]]; then
        case $name in
        env) stage env 30 $PY -c "import torch, transformers, accelerate, triton; print(torch.__version__, transformers.__version__, accelerate.__version__, triton.__version__)" ;;
        aggregate) stage aggregate 120 $PY benchmarks/aggregate.py --skip-cpu --gpu-device cpu --gpu-rows 300 --members 4 --classes 5 \
            --repeat 1 --max-elements 100000 --json "$OUT/aggregate.json" ;;
        sweep) stage sweep 120 $PY benchmarks/aggregate.py --skip-cpu --gpu-device cpu --gpu-rows 130 --sweep --repeat 1 \
            --max-elements 100000 --json "$OUT/sweep.json" ;;
        mfu) stage mfu 120 $PY benchmarks/mfu.py --steps 2 --batch 2 --seq 32 --precision no --json "$OUT/mfu.json" ;;
        profile) stage profile 120 $PY benchmarks/profile_step.py --batch 2 --seq 32 --steps 2 --json "$OUT/profile.json" ;;
        predict) stage predict 120 $PY benchmarks/predict.py --rows 64 --batch-size 16 --json "$OUT/predict-bf16.json" ;;
        tests|tests-short) stage "$name" 120 $PY -m pytest -q -x -p no:cacheprovider tests/test_kernels.py -k "slice" ;;
        mfu-compile) ;;  # compiling BERT-base on a CPU takes minutes: no smoke run
        *) echo "unknown stage '$name'; known: env aggregate sweep mfu profile predict tests mfu-compile" >&2; exit 2 ;;
        esac
        continue
    fi
    case $name in
    env) stage env 30 bash -c "nvidia-smi; $PY -c 'import torch, transformers, accelerate, triton, numba; print(torch.__version__, transformers.__version__, accelerate.__version__, triton.__version__, numba.__version__, torch.cuda.get_device_name())'" ;;
    # the Triton kernel on 10M rows, 4-16 members x 2-20 classes, fp32 and bf16: share of the copy bandwidth
    aggregate) stage aggregate 200 $PY benchmarks/aggregate.py --skip-cpu --repeat 5 --json "$OUT/aggregate.json" ;;
    # every launch of the kernel (both layouts, block shapes, counts) on six shapes, soft votes
    sweep) stage sweep 130 $PY benchmarks/aggregate.py --skip-cpu --sweep --repeat 3 --json "$OUT/sweep.json" ;;
    # BERT-base-sized member, bf16, sequence 128: samples/s and MFU at three batch sizes
    mfu) stage mfu 120 $PY benchmarks/mfu.py --batch 256 128 --steps 120 --json "$OUT/mfu.json" ;;
    # the bare training step under torch.profiler: device-bound or host-bound, and which kernels
    profile) stage profile 60 $PY benchmarks/profile_step.py --batch 64 256 --json "$OUT/profile.json" ;;
    # 10,000 SST/CFIMDB sentences through 4 members: bf16 ensemble vs bf16 pipelines vs fp32 ensemble
    predict) stage predict 100 $PY benchmarks/predict.py --precision bf16 --batch-size 256 --json "$OUT/predict-bf16.json" ;;
    # the kernels compiled for this GPU against the torch reference (every failure listed), and
    # aggregate's CUDA path against its CPU path
    tests) stage tests 150 $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py "tests/test_aggregate.py::test_cuda_input_matches_cpu" ;;
    # the same kernel tests, the ones that compile few kernels (a short run)
    tests-short) stage tests-short 60 $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py \
        -k "ties or identical or routes or (every_launch and hard and rows-128-4)" ;;
    # compiling BERT-base (forward and backward) took more than 150 s on 2026-12-04
    mfu-compile) stage mfu-compile 300 $PY benchmarks/mfu.py --compile --batch 256 --steps 120 --json "$OUT/mfu-compile.json" ;;
    *) echo "unknown stage '$name'; known: env aggregate sweep mfu profile predict tests tests-short mfu-compile" >&2; exit 2 ;;
    esac
done
echo "== done in $((SECONDS - start))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
