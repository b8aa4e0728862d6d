#!/usr/bin/env bash
# One `accelerate launch` per node: srun starts this script once on every node of the job, and it starts one
# training process per GPU there. Arguments are passed to `lyricdist train`.
#
# Reads from the environment (train-multinode.sbatch sets them; Slurm sets the SLURM_* ones):
#   MAIN_PROCESS_IP     the head node (the c10d rendezvous host)        required
#   MAIN_PROCESS_PORT   rendezvous port on the head node                 default 29500
#   SLURM_NODEID        this node's rank in the job (= machine rank)     default 0
#   SLURM_JOB_NUM_NODES nodes in the job                                 default 1
#   GPUS_PER_NODE       processes per node      default $SLURM_GPUS_ON_NODE, else the GPUs nvidia-smi lists
#   ACCELERATE_CONFIG   accelerate config file  default launch/accelerate/multi-node.yaml next to this script
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${ACCELERATE_CONFIG:-$here/../accelerate/multi-node.yaml}"
: "${MAIN_PROCESS_IP:?set MAIN_PROCESS_IP to the head node (train-multinode.sbatch does)}"
port="${MAIN_PROCESS_PORT:-29500}"
node_rank="${SLURM_NODEID:-0}"
num_nodes="${SLURM_JOB_NUM_NODES:-1}"
gpus="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-}}"
if [[ -z "$gpus" ]]; then
  gpus="$(nvidia-smi --list-gpus 2>/dev/null | wc -l)"
fi
if [[ "$gpus" -lt 1 ]]; then
  echo "accelerate-node.sh: no GPUs found on $(hostname); set GPUS_PER_NODE or request --gpus-per-node" >&2
  exit 1
fi

echo "node $node_rank/$num_nodes on $(hostname): $gpus processes, rendezvous $MAIN_PROCESS_IP:$port"
exec accelerate launch \
  --config_file "$config" \
  --num_machines "$num_nodes" \
  --num_processes "$((num_nodes * gpus))" \
  --machine_rank "$node_rank" \
  --main_process_ip "$MAIN_PROCESS_IP" \
  --main_process_port "$port" \
  -m lyricdist train "$@"
