"""Why did the bad run fail: the analysis of a two-level design between a good and a bad run.

Ray-free and MLflow-free. The factors are coded -1 (good run's level) / +1 (bad run's). See
:mod:`camotune.results.why.report` for the report layout, :mod:`.fit` for the model,
:mod:`.contrasts` for the gap/undo/apply effects, :mod:`.shapley` and :mod:`.verdict`.
"""

from .fit import Fit, fit_response
from .report import analyse_response, json_safe, render_text, why_report

__all__ = ["Fit", "analyse_response", "fit_response", "json_safe", "render_text", "why_report"]
