#!/usr/bin/env bash
# Train on a Ray cluster: `ray job submit` with `accelerate launch` as the entrypoint, on one node with GPUS
# GPUs (the job reserves them with --entrypoint-num-gpus; Ray places it on a node that has them).
#   launch/ray/train.sh [ray job submit options] -- [lyricdist train options]
#   RAY_ADDRESS=http://HEAD:8265 GPUS=8 launch/ray/train.sh --no-wait -- \
#     --config configs/lstm-4x256.yaml --data.corpus /shared/corpus/x --train.out_dir /shared/runs/x
# data.corpus and train.out_dir must be paths on storage the GPU node sees. --resume is always added: submitting
# the same command again continues the run. GPUS=0 runs one CPU process (a smoke test on any cluster).
# Later ray options win: `--runtime-env my-env.yaml` replaces launch/ray/runtime-env.yaml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

gpus="${GPUS:-1}"
ray_args=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  ray_args+=("$1")
  shift
done
if [[ $# -gt 0 ]]; then
  shift
fi

train_extra=()
if [[ "$gpus" -eq 0 ]]; then
  launcher=(accelerate launch --cpu --num_processes 1)
  train_extra=(--train.cpu true)
elif [[ "$gpus" -eq 1 ]]; then
  launcher=(accelerate launch --config_file launch/accelerate/one-gpu.yaml)
else
  launcher=(accelerate launch --config_file launch/accelerate/one-node-8gpu-bf16.yaml --num_processes "$gpus")
fi

exec ray job submit \
  --runtime-env launch/ray/runtime-env.yaml \
  --entrypoint-num-gpus "$gpus" \
  --entrypoint-num-cpus 1 \
  "${ray_args[@]}" \
  -- "${launcher[@]}" -m lyricdist train "$@" "${train_extra[@]}" --resume
