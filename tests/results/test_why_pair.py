"""From two TrainConfigs to a verdict: the pair's design, responses planted on its runs, the
JSON report (no training: the responses are simulated from the runs' coded levels)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from camotune.results.why import render_text, why_report
from camotune.spaces.pair_design import design_pair
from camotune.trainer.config import TrainConfig

GOOD = TrainConfig(batch_size=2, accumulation_steps=4, lr=2.5e-4, img_size=384, use_ema=False,
                   deep_supervision=False)
BAD = TrainConfig(batch_size=16, accumulation_steps=8, lr=1e-4, img_size=320, use_ema=True,
                  deep_supervision=True)


def test_the_report_pair_scaled_down_names_the_planted_pair():
    pair = design_pair(GOOD, BAD, seeds=(0, 1, 2), max_runs=20, epochs=6,
                       group=[("batch_size", "accumulation_steps")])
    assert len(pair.runs) == 17 and pair.extra_good_corner  # 5 factors: half fraction + corner
    rng = np.random.default_rng(0)
    rows = []
    for i, seed, cfg in pair.trials():
        coded = pair.runs[i].coded
        # works only with the good LR and no EMA; image size costs a little
        works = coded["lr"] < 0 and coded["use_ema"] < 0
        iou = 0.1 + 0.4 * works - 0.01 * coded["img_size"] + rng.normal(0, 0.02)
        rows.append({**coded, "seed": seed, "final_iou": iou,
                     "collapsed": float(not works), "iou_epoch2": np.nan if i == 3 else iou})
        assert cfg.seed == seed and cfg.epochs == 6
    frame = pd.DataFrame(rows)
    summary = pair.summary()
    report = why_report(frame, summary["factors"], ["final_iou", "iou_epoch2", "collapsed"],
                        design=summary["design"])
    json.dumps(report, allow_nan=False)
    assert report["design"]["resolution"] == 5 and report["design"]["runs"] == 17
    assert report["factors"][1]["good"] == {"batch_size": 2, "accumulation_steps": 4}
    iou = report["responses"]["final_iou"]
    assert iou["verdict_detail"]["set"] == ["lr", "use_ema"]
    assert iou["verdict_detail"]["joint"] is True and iou["verdict_detail"]["confirmed"]
    shares = sum(s["value"] for s in iou["shapley"].values())
    assert abs(shares - iou["gap"]["fitted"]) < 1e-9
    collapsed = report["responses"]["collapsed"]
    assert collapsed["gap"]["observed"] == -1.0  # good never collapses, bad always does
    assert collapsed["verdict_detail"]["set"] == ["lr", "use_ema"]
    assert report["responses"]["iou_epoch2"]["n_missing"] == 3
    assert "factor lr: good 0.00025, bad 0.0001" in render_text(report)
