"""The names of the files and folders in a sweep folder (``<storage-path>/<name>/``)."""

from __future__ import annotations

SWEEP_FILE = "sweep.yaml"      # the sweep's settings, written first (camotune resume reads it)
TRIALS_FILE = "trials.jsonl"   # the driver's append-only trial events
TRIALS_DIR = "trials"          # one folder per trial: trials/<trial_id>/
