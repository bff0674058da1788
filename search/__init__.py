"""Hyperparameter search with Ray Tune: ASHA or FIFO trial scheduling, Optuna (or a
factorial design) choosing the configs, every trial a `camotune.trainer.fit` run.

```python
from camotune.search import SweepSettings, run_sweep
from camotune.spaces import load_space
from camotune.trainer import TrainConfig
settings = SweepSettings(name="s1", storage_path="/abs/sweeps", space=load_space("smoke"),
                         space_source="smoke", base=TrainConfig(dataset_path="data"))
run_sweep(settings)          # then camotune.results.load_sweep(settings.sweep_dir)
```

The names below are imported on first use (Ray only when a sweep runs).
"""

from camotune.lazy import lazy_exports

_EXPORTS = {
    "SweepSettings": ".settings", "CollapseSettings": ".settings",
    "read_settings": ".settings", "write_settings": ".settings",
    "run_sweep": ".sweep", "prepare": ".sweep", "run": ".sweep", "build_tuner": ".sweep",
    "init_ray": ".runtime",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
