#!/bin/bash
# torchrun launcher (any machine, or one node outside SLURM): torchrun starts the ranks and
# Lightning detects the TorchElastic environment, so it does not start processes itself.
#   cluster/torchrun.sh 4 configs/deq.yaml [--key=value ...]          # 4 GPUs on this machine
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 cluster/torchrun.sh 4 configs/deq.yaml   # on each node
# All ranks write one run folder, runs/<experiment>/torchrun_<run id>/ (the rdzv id is shared).
set -euo pipefail
NPROC=${1:?usage: cluster/torchrun.sh NPROC_PER_NODE configs/X.yaml [--key=value ...]}
CONFIG=${2:?usage: cluster/torchrun.sh NPROC_PER_NODE configs/X.yaml [--key=value ...]}
shift 2
NNODES=${NNODES:-1}
ACCEL=${ACCELERATOR:-gpu}
RUN_ID=${RUN_ID:-$(date +%Y%m%d_%H%M%S)_$$}
if [ "$NNODES" -gt 1 ]; then
  RDZV=(--nnodes="$NNODES" --node_rank="${NODE_RANK:?set NODE_RANK}" --rdzv_backend=c10d
        --rdzv_endpoint="${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" --rdzv_id="$RUN_ID")
else
  RDZV=(--standalone)
fi
exec torchrun "${RDZV[@]}" --nproc_per_node="$NPROC" -m lit_papers fit --config "$CONFIG" \
    --trainer.accelerator="$ACCEL" --trainer.devices="$NPROC" --trainer.num_nodes="$NNODES" \
    --trainer.strategy=ddp "$@"
