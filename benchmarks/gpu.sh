#!/usr/bin/env bash
# The GPU figures of docs/speed.md on one CUDA GPU, offline, in under 8 minutes (one H200: ~3).
#
#   bash benchmarks/gpu.sh                    # writes benchmarks/results/<gpu>.{json,md} (+ $OUT)
#
# Needs torch and lightning only. With the wheels of benchmarks/wheels.sh unpacked on PYTHONPATH
# (jsonargparse, mlxtend, ...) it also runs the population config through the CLI, and the suite's
# `torchdeq` row (our DEQ step vs the torchdeq package) runs instead of being skipped.
set -u
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_log.txt
mkdir -p benchmarks/results
exec > >(tee "$LOG") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"

echo "== 1. correctness on the GPU: captured steps == eager steps (single model and population)"
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_step_capture.py tests/test_population.py \
    tests/test_lottery_population.py -k "cuda_graph or captured" || echo "GPU TESTS FAILED"

echo "== 2. benchmark suite: 60,000 MNIST-shaped samples, batch 60, 3 epochs per measurement"
timeout 290 $PY -m benchmarks.suite --epochs 3 --members 16 --steps-per-call 50 --repeat 2 || echo "SUITE FAILED"

echo "== 2b. the paper-scale LeNet lottery study (15 members): 2 levels x 10K iterations timed, full study projected"
timeout 150 $PY -m benchmarks.lottery_study || echo "LOTTERY STUDY TIMING FAILED"

echo "== 3. the population config end to end through the CLI (needs jsonargparse + mlxtend)"
if $PY -c "import jsonargparse, mlxtend" 2>/dev/null; then
    timeout 60 $PY -m lit_papers fit --config configs/population.yaml --trainer.accelerator=gpu \
        --run_root /tmp/gpu_runs --trainer.enable_progress_bar=false || echo "CLI RUN FAILED"
    cat /tmp/gpu_runs/population/*/summary.json | head -c 2000
else
    echo "skipped: jsonargparse/mlxtend not importable (carry the wheels of benchmarks/wheels.sh)"
fi

if [ -n "${OUT:-}" ]; then cp benchmarks/results/*.json benchmarks/results/*.md "$OUT"/ 2>/dev/null; fi
echo "done"
