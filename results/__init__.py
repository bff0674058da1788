"""A sweep folder read back, without Ray: `load_sweep` (trials as a pandas frame), the
leaderboard, plots, collapse attribution and the export of the best config.

```python
from camotune.results import load_sweep, to_table, exported_config
sweep = load_sweep("sweeps/s1")
print(to_table(sweep))
cfg, row = exported_config(sweep)      # the best trial's TrainConfig
```

The names below are imported on first use (pandas only then).
"""

from camotune.lazy import lazy_exports

_EXPORTS = {
    "Sweep": ".read", "load_sweep": ".read",
    "ranked": ".leaderboard", "summary": ".leaderboard", "to_table": ".leaderboard",
    "to_csv": ".leaderboard", "to_json": ".leaderboard", "records": ".leaderboard",
    "exported_config": ".export", "render": ".export",
    "collapse_report": ".collapse", "attribution_table": ".collapse",
    "write_plots": ".plots",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
