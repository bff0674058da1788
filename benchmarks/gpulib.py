"""What the GPU benchmark scripts share: importing camotune from the source tree with torch and
timm alone, refusing the packages the GPU machines do not have, the settings, timing helpers.

The GPU machines have Python, torch and timm, nothing else of camotune's dependencies, and
camotune is not installed. `use_source_tree` registers the packages ``camotune`` (the
``camotune/`` folder: ``errors``), ``camotune.model`` (``model/``) and ``camotune.trainer``
(``trainer/``) straight from this checkout, as pyproject.toml maps them, so
``camotune.model``, ``camotune.trainer.step`` and ``camotune.trainer.losses`` import exactly
as they do when installed. `refuse_imports` makes any import of ray, mlflow, optuna,
albumentations or pysodmetrics fail, here as there, so a CPU run proves the GPU run needs none.
"""

from __future__ import annotations

import gc
import importlib.abc
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REFUSED = ("ray", "mlflow", "optuna", "albumentations", "pysodmetrics")


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in REFUSED:
            raise ModuleNotFoundError(
                f"{name} is not available on the GPU machines (refused by benchmarks/gpulib.py)",
                name=name)
        return None


def refuse_imports() -> None:
    if not any(isinstance(f, _Refuse) for f in sys.meta_path):
        sys.meta_path.insert(0, _Refuse())
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in REFUSED)
    if loaded:
        raise RuntimeError(f"already imported: {', '.join(loaded)}")


def use_source_tree(repo: Path = REPO) -> None:
    """Import ``camotune``, ``camotune.model`` and ``camotune.trainer`` from ``repo`` (whether or
    not camotune is installed: the checkout wins)."""
    for name, folder in (("camotune", "camotune"), ("camotune.model", "model"),
                         ("camotune.trainer", "trainer")):
        init = repo / folder / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(repo / folder)])
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {name} from {init}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if "." in name:
            setattr(sys.modules["camotune"], name.split(".", 1)[1], module)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def env_list(name: str, default: str, kind: Callable = int) -> list:
    text = os.environ.get(name) or default
    return [kind(v) for v in text.replace(" ", "").split(",") if v]


def settings() -> dict[str, Any]:
    """Everything the run does, from the environment (see benchmarks/gpu.sh)."""
    quick = os.environ.get("QUICK", "0") not in ("", "0", "false", "no")
    size = env_int("SIZE", 384)
    return {
        "quick": quick,
        "device": os.environ.get("DEVICE") or "cuda",
        "out": os.environ.get("OUT") or "gpu-results",
        "backbone": os.environ.get("BACKBONE") or "edgenext_base",
        "small_backbone": os.environ.get("SMALL_BACKBONE") or "edgenext_xx_small",
        "size": size,
        "batches": env_list("BATCHES", "8,16" if quick else "1,2,4,8,16,32"),
        "precisions": env_list("PRECISIONS", "fp32,bf16" if quick else "fp32,bf16,bf16+compile",
                               str),
        "compile_batches": env_list("COMPILE_BATCHES", "16"),
        "step_batches": env_list("STEP_BATCHES", "8,16"),
        "accumulation": env_int("ACCUMULATION", 4),
        "measure_s": env_float("MEASURE_S", 0.5 if quick else 1.0),
        "maxb_sizes": env_list("MAXB_SIZES", str(size) if quick else "320,352,384"),
        "maxb_probes": env_int("MAXB_PROBES", 5 if quick else 6),
        "maxb_start": env_int("MAXB_START", 32),
        "maxb_cap": env_int("MAXB_CAP", 512),
        "pack_procs": env_list("PACK_PROCS", "1,2,4"),
        "pack_seconds": env_float("PACK_SECONDS", 8.0),
        "pack_size": env_int("PACK_SIZE", size),
        "pack_batch": env_int("PACK_BATCH", 8),
        "budget_s": env_float("BUDGET_S", 95.0 if quick else 290.0),
        "threads": env_int("THREADS", 0),
        # cudnn autotuning costs ~20 s per new (batch, precision) of edgenext_base at 384 px on
        # an H200: more than the whole ceiling section's share. Off unless asked for.
        "cudnn_benchmark": env_int("CUDNN_BENCHMARK", 0) == 1,
    }


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    import torch

    text = str(exc)
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text))


def free_memory(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def rate(step: Callable[[], int], device: Any, *, seconds: float, warmup: int = 2) -> float:
    """Images/s of ``step`` (which returns the images it processed): ``warmup`` untimed calls,
    then enough calls to fill about ``seconds`` (at least 3), timed between device syncs."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    once = max(time.perf_counter() - t0, 1e-6)
    n = max(3, int(seconds / once))
    images = 0
    t0 = time.perf_counter()
    for _ in range(n):
        images += step()
    sync(device)
    return images / (time.perf_counter() - t0)


class SyncCounter:
    """Counts host syncs CUDA's sync debug mode reports inside the block, by the innermost
    calling frame outside torch (a camotune or timm line). Counts nothing on the CPU."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.sites: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.sites.values())

    def __enter__(self) -> SyncCounter:
        import warnings

        import torch

        if self.device.type != "cuda":
            return self
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always")
        self._show = warnings.showwarning
        warnings.showwarning = self._record
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        import traceback

        if "synchroniz" not in str(message):
            return
        site = "?"
        for frame in reversed(traceback.extract_stack()[:-1]):
            if (f"{os.sep}torch{os.sep}" not in frame.filename and frame.filename != __file__
                    and not frame.filename.endswith(f"{os.sep}warnings.py")):
                site = f"{_short(frame.filename)}:{frame.lineno}"
                break
        self.sites[site] = self.sites.get(site, 0) + 1

    def __exit__(self, *exc: Any) -> None:
        import warnings

        import torch

        if self.device.type != "cuda":
            return
        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._show
        self._catch.__exit__(*exc)


def _short(path: str) -> str:
    p = Path(path)
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        parts = p.parts
        return "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts \
            else p.name


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
