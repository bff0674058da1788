"""The CamoXpert trainer: one typed `TrainConfig` (its fields are the ``camotune train`` flags)
and `fit`, the two-stage training loop.

```python
from camotune.trainer import TrainConfig, fit
result = fit(TrainConfig(dataset_path="data/COD10K-v3", epochs=10), report=print)
```

Ray and MLflow are never imported here; the names below are imported on first use, so
``import camotune.trainer`` costs no torch, pandas or albumentations.
"""

from camotune.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config", "to_argv": ".config", "from_argv": ".config",
    "to_dict": ".config", "from_dict": ".config", "load_yaml": ".config",
    "dump_yaml": ".config", "add_config_arguments": ".config",
    "config_from_namespace": ".config",
    "fit": ".loop", "FitResult": ".loop",
    "evaluate_checkpoint": ".evaluate", "load_model": ".evaluate",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
