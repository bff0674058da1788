#!/usr/bin/env bash
# Start a Ray worker node that joins the head at $RAY_HEAD_ADDRESS and stays in the foreground.
# Installed in the image as camotune-ray-worker; extra arguments go to `ray start`.
#
# GPUs:
#   GPUS_PER_WORKER unset or empty: the node owns every GPU the container sees.
#   GPUS_PER_WORKER=k (k >= 1): the node claims k GPUs that no other worker on this host holds,
#     by holding an exclusive lock per GPU in $GPU_LOCK_DIR (default /cache/gpu-locks, on the
#     cache volume the worker containers of one host share) and hiding the other GPUs with
#     CUDA_VISIBLE_DEVICES. Docker gives every replica of a scaled service the same devices,
#     so without claims `--scale ray-worker=N` would make N Ray nodes share and double-count
#     the same GPUs. The locks live as long as this process (it becomes `ray start --block`):
#     a container that stops releases its GPUs.
#   GPUS_PER_WORKER=0: a CPU-only node.
# CPUs: RAY_WORKER_CPUS caps the CPUs this node offers (default: all Ray detects).
set -euo pipefail

die() { echo "camotune-ray-worker: $*" >&2; exit 2; }

head_address="${RAY_HEAD_ADDRESS:-ray-head:6379}"
args=(start --address "${head_address}" --block)
[[ -n "${RAY_WORKER_CPUS:-}" ]] && args+=(--num-cpus "${RAY_WORKER_CPUS}")

want="${GPUS_PER_WORKER:-}"
if [[ -n "${want}" ]]; then
    [[ "${want}" =~ ^[0-9]+$ ]] || die "GPUS_PER_WORKER must be a whole number, got '${want}'"
    if (( want == 0 )); then
        export CUDA_VISIBLE_DEVICES=""
    else
        total="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
        (( total > 0 )) || die "GPUS_PER_WORKER=${want} but nvidia-smi lists no GPU in this container"
        lock_dir="${GPU_LOCK_DIR:-/cache/gpu-locks}"
        mkdir -p "${lock_dir}" || die "cannot create GPU_LOCK_DIR ${lock_dir}"
        claimed=()
        for (( i = 0; i < total && ${#claimed[@]} < want; i++ )); do
            # The descriptor stays open (and the lock held) across the exec below.
            exec {fd}>>"${lock_dir}/gpu${i}.lock"
            if flock --nonblock "${fd}"; then
                claimed+=("${i}")
            else
                exec {fd}>&-
            fi
        done
        (( ${#claimed[@]} == want )) || die "GPUS_PER_WORKER=${want} but only ${#claimed[@]} of ${total} GPUs are free on this host; lower --scale ray-worker or GPUS_PER_WORKER"
        CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${claimed[*]}")"
        export CUDA_VISIBLE_DEVICES
    fi
    args+=(--num-gpus "${want}")
fi

echo "camotune-ray-worker: joining ${head_address} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<all>}" >&2
exec ray "${args[@]}" "$@"
