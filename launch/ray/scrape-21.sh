#!/usr/bin/env bash
# Scrape the 21 artists of configs/artists/original-21.yaml on a Ray cluster: `ray job submit` runs
# `lyricdist scrape` as the job's driver, which fans out one Ray task per artist over the cluster.
#   launch/ray/scrape-21.sh [ray job submit options] -- [lyricdist scrape options]
#   RAY_ADDRESS=http://HEAD:8265 launch/ray/scrape-21.sh -- --out /shared/datasets/original-21 --max_songs 200
# GENIUS_ACCESS_TOKEN must be set in the environment of the Ray nodes (not in the runtime env: that is shown in
# the dashboard); see launch/ray/README.md. --out is written by the driver: put it on storage you can reach, or
# add --push-to-hub. Re-submitting the same command retries only the artists that failed.
# ARTISTS_FILE picks another artists list (a path in the repository, or an absolute path on the cluster).
# Later ray options win: `--runtime-env my-env.yaml` replaces launch/ray/runtime-env.yaml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ray_args=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  ray_args+=("$1")
  shift
done
if [[ $# -gt 0 ]]; then
  shift
fi

exec ray job submit \
  --runtime-env launch/ray/runtime-env.yaml \
  "${ray_args[@]}" \
  -- lyricdist scrape --artists_file "${ARTISTS_FILE:-configs/artists/original-21.yaml}" --progress false "$@"
