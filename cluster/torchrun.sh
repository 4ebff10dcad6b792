#!/bin/bash
# torchrun launcher (any machine, or each node of a multi-node job): torchrun starts the ranks and
# Lightning detects the TorchElastic environment, so it does not start processes itself.
#   cluster/torchrun.sh 4 configs/deq.yaml [--key=value ...]          # 4 GPUs on this machine
#   RUN_ID=deq42 NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 cluster/torchrun.sh 4 configs/deq.yaml  # node 0
#   RUN_ID=deq42 NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 cluster/torchrun.sh 4 configs/deq.yaml  # node 1
# Multi-node: RUN_ID is the rendezvous id and must be the same on every node, so it is required;
# inside a SLURM job it defaults to SLURM_JOB_ID (and NODE_RANK to SLURM_NODEID), e.g.
#   srun --ntasks-per-node=1 env NNODES=2 MASTER_ADDR=node0 cluster/torchrun.sh 4 configs/deq.yaml
# All ranks write one run folder: runs/<experiment>/slurm_<job id>/ inside SLURM, else
# runs/<experiment>/torchrun_<run id>/. Each rank gets CPUs // NPROC_PER_NODE threads
# (OMP_NUM_THREADS; CPUs = SLURM_CPUS_PER_TASK, else nproc). DRY_RUN=1 prints the command instead.
set -euo pipefail
usage() { echo "usage: [NNODES=N NODE_RANK=R MASTER_ADDR=host RUN_ID=id] cluster/torchrun.sh NPROC_PER_NODE configs/X.yaml [--key=value ...]" >&2; exit 2; }
launch() {  # run the command; with DRY_RUN=1 print the thread setting and the command instead
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf 'export OMP_NUM_THREADS=%q\n' "$OMP_NUM_THREADS"; printf '%q' "$1"; shift; printf ' %q' "$@"; echo
    exit 0
  fi
  exec "$@"
}
[ $# -ge 2 ] && [ "$1" -gt 0 ] 2>/dev/null || usage
NPROC=$1
CONFIG=$2
shift 2
NNODES=${NNODES:-1}
ACCEL=${ACCELERATOR:-gpu}
CPUS=${SLURM_CPUS_PER_TASK:-$(nproc)}
export OMP_NUM_THREADS=$(( CPUS / NPROC > 0 ? CPUS / NPROC : 1 ))
if [ "$NNODES" -gt 1 ]; then
  RUN_ID=${RUN_ID:-${SLURM_JOB_ID:-}}
  NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-}}
  if [ -z "$RUN_ID" ] || [ -z "$NODE_RANK" ] || [ -z "${MASTER_ADDR:-}" ]; then
    echo "error: a $NNODES-node run needs RUN_ID (the same on every node; default SLURM_JOB_ID), NODE_RANK" \
         "(default SLURM_NODEID) and MASTER_ADDR (node 0's host name); set the missing ones" >&2
    exit 2
  fi
  RDZV=(--nnodes="$NNODES" --node_rank="$NODE_RANK" --rdzv_backend=c10d
        --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" --rdzv_id="$RUN_ID")
else
  RDZV=(--standalone)
fi
launch torchrun "${RDZV[@]}" --nproc_per_node="$NPROC" -m lit_papers fit --config "$CONFIG" \
    --trainer.accelerator="$ACCEL" --trainer.devices="$NPROC" --trainer.num_nodes="$NNODES" \
    --trainer.strategy=ddp "$@"
