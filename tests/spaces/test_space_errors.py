"""Every malformed space file raises BadInput with one line naming the file and the key."""

from __future__ import annotations

import pytest

from camotune.errors import BadInput
from camotune.spaces import load_space

LR = "lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}"
SIX = """design:
  levels:
    batch_size: [2, 16]
    accumulation_steps: [4, 8]
    lr: [2.5e-4, 1.0e-4]
    img_size: [384, 320]
    use_ema: [false, true]
    deep_supervision: [false, true]
  fraction: FRACTION
"""

CASES = [
    # (id, file text, what the message must contain)
    ("unparsable", "params: {lr: [1\n", "not valid YAML"),
    ("duplicate-key", f"params:\n  {LR}\n  {LR}\n", "duplicate key 'lr'"),
    ("not-a-mapping", "- 1\n- 2\n", "expected a mapping"),
    ("empty-file", "", "expected a mapping with description and params or design (got an "
                       "empty file)"),
    ("unknown-top-level", f"params: {{{LR}}}\nsearch: 1\n", "search: unknown top-level key"),
    ("unknown-field-params", "params: {learning_rate: {type: uniform, low: 0.1, high: 1}}\n",
     "params.learning_rate: unknown TrainConfig field"),
    ("unknown-field-fixed", f"params: {{{LR}}}\nfixed: {{imgsize: 64}}\n",
     "fixed.imgsize: unknown TrainConfig field 'imgsize' (did you mean img_size?)"),
    ("unknown-field-points", f"params: {{{LR}}}\npoints: [{{lr: 1.0e-3, nope: 1}}]\n",
     "points[0].nope: unknown TrainConfig field"),
    ("unknown-field-design", "design: {levels: {nope: [1, 2]}}\n",
     "design.levels.nope: unknown TrainConfig field"),
    ("params-and-fixed", f"params: {{{LR}}}\nfixed: {{lr: 1.0e-3}}\n",
     "params.lr: also given in fixed"),
    ("design-and-fixed", "design: {levels: {lr: [1.0e-3, 1.0e-2]}}\nfixed: {lr: 1.0e-3}\n",
     "design.levels.lr: also given in fixed"),
    ("params-not-mapping", "params: [lr]\n", "params: expected a mapping"),
    ("dist-not-mapping", "params: {lr: 0.1}\n", "params.lr: expected a mapping"),
    ("dist-unknown-key", "params: {lr: {type: uniform, low: 0.1, high: 1, log: true}}\n",
     "params.lr: log: unknown key"),
    ("dist-no-type", "params: {lr: {low: 0.1, high: 1}}\n", "params.lr: type: missing"),
    ("unknown-type", "params: {lr: {type: normal, low: 0.1, high: 1}}\n",
     "params.lr: type: unknown distribution 'normal'"),
    ("low-not-number", "params: {lr: {type: uniform, low: abc, high: 1}}\n",
     "params.lr: low: must be a finite number"),
    ("low-missing", "params: {lr: {type: uniform, high: 1}}\n", "params.lr: low: uniform needs"),
    ("int-low-float", "params: {warmup_steps: {type: int, low: 0.5, high: 10}}\n",
     "params.warmup_steps: low: must be an integer"),
    ("fixed-wrong-type", f"params: {{{LR}}}\nfixed: {{img_size: big}}\n",
     "fixed.img_size: --img-size must be an integer"),
    ("fixed-not-mapping", f"params: {{{LR}}}\nfixed: [1]\n", "fixed: expected a mapping"),
    ("description-not-string", f"description: [1]\nparams: {{{LR}}}\n",
     "description: must be a string"),
    ("points-not-list", f"params: {{{LR}}}\npoints: {{lr: 1.0e-3}}\n",
     "points: expected a list"),
    ("point-not-mapping", f"params: {{{LR}}}\npoints: [1.0e-3]\n",
     "points[0]: expected a non-empty mapping"),
    ("values-not-list", "params: {batch_size: {type: choice, values: 4}}\n",
     "params.batch_size: values: choice needs a list"),
    ("values-missing", "params: {batch_size: {type: choice}}\n",
     "params.batch_size: values: missing"),
    ("choice-with-low", "params: {batch_size: {type: choice, values: [2], low: 1}}\n",
     "params.batch_size: choice takes values, not low/high"),
    ("choice-nested", "params: {batch_size: {type: choice, values: [[2, 4]]}}\n",
     "params.batch_size: values: [2, 4] is not a number"),
    ("low-ge-high", "params: {lr: {type: loguniform, low: 1.0e-2, high: 1.0e-2}}\n",
     "params.lr: low must be < high"),
    ("int-low-gt-high", "params: {warmup_steps: {type: int, low: 10, high: 0}}\n",
     "params.warmup_steps: low must be < high"),
    ("loguniform-zero", "params: {weight_decay: {type: loguniform, low: 0, high: 0.1}}\n",
     "params.weight_decay: low: loguniform needs low > 0"),
    ("empty-choices", "params: {batch_size: {type: choice, values: []}}\n",
     "params.batch_size: values: choice needs at least one value"),
    ("duplicate-choices", "params: {batch_size: {type: choice, values: [2, 4, 2]}}\n",
     "params.batch_size: values: 2 is listed twice"),
    ("uniform-on-int-field", "params: {batch_size: {type: uniform, low: 2, high: 16}}\n",
     "params.batch_size: uniform samples floats but batch_size is int"),
    ("int-on-float-field", "params: {lr: {type: int, low: 1, high: 3}}\n",
     "params.lr: type int samples integers but lr is float"),
    ("choice-wrong-type", "params: {use_ema: {type: choice, values: [1, 0]}}\n",
     "params.use_ema: --use-ema must be true or false"),
    ("invalid-choice-value", "params: {img_size: {type: choice, values: [320, 100]}}\n",
     "params.img_size: --img-size must be a multiple of 32 (got 100)"),
    ("invalid-int-range", "params: {img_size: {type: int, low: 320, high: 384}}\n",
     "params.img_size: --img-size must be a multiple of 32 (got 321)"),
    ("invalid-range-end", "params: {val_fraction: {type: uniform, low: 0.1, high: 1.0}}\n",
     "params.val_fraction: --val-fraction must lie strictly between 0 and 1"),
    ("invalid-fixed", f"params: {{{LR}}}\nfixed: {{epochs: 10}}\n",
     "fixed: --stage1-epochs must be <= --epochs (10)"),
    ("point-outside-range", f"params: {{{LR}}}\npoints: [{{lr: 0.5}}]\n",
     "points[0].lr: 0.5 lies outside loguniform[0.0001, 0.01]"),
    ("point-invalid-combination", "params: {num_experts: {type: choice, values: [2, 7]}, "
     "top_k: {type: choice, values: [2, 3]}}\npoints: [{num_experts: 2, top_k: 3}]\n",
     "points[0].top_k: --top-k must be <= --num-experts (2) (got 3)"),
    ("design-invalid-run", "design: {levels: {num_experts: [7, 2], top_k: [2, 3]}}\n",
     "design run 4: --top-k must be <= --num-experts (2) (got 3)"),
    ("point-not-searched", f"params: {{{LR}}}\npoints: [{{lr: 1.0e-3, img_size: 64}}]\n",
     "points[0].img_size: not a searched parameter"),
    ("point-with-design", "design: {levels: {lr: [1.0e-3, 1.0e-2]}}\npoints: [{lr: 1.0e-3}]\n",
     "points: only with params"),
    ("both-design-and-params", f"params: {{{LR}}}\ndesign: {{levels: {{use_ema: [false, true]}}}}\n",
     "design: give either params or design, not both"),
    ("neither", "description: nothing\nfixed: {lr: 1.0e-3}\n", "params: missing"),
    ("design-not-mapping", "design: [1]\n", "design: expected a mapping"),
    ("design-unknown-key", "design: {levels: {lr: [1.0e-3, 1.0e-2]}, runs: 4}\n",
     "design.runs: unknown key"),
    ("design-type", "design: {type: latin, levels: {lr: [1.0e-3, 1.0e-2]}}\n",
     "design.type: only 'factorial'"),
    ("design-one-level", "design: {levels: {lr: [1.0e-3]}}\n",
     "design.levels.lr: needs exactly 2 levels"),
    ("design-three-levels", "design: {levels: {lr: [1.0e-3, 1.0e-2, 1.0e-1]}}\n",
     "design.levels.lr: needs exactly 2 levels"),
    ("design-same-levels", "design: {levels: {lr: [1.0e-3, 1.0e-3]}}\n",
     "design.levels.lr: the 2 levels must differ"),
    ("design-invalid-level", "design: {levels: {img_size: [384, 100]}}\n",
     "design.levels.img_size: --img-size must be a multiple of 32 (got 100)"),
    ("design-bad-fraction", SIX.replace("FRACTION", "3"),
     "design.fraction: 3 is not offered for 6 factors (one of 1, 2, 4, 8"),
    ("design-too-fractional", SIX.replace("FRACTION", "16"),
     "design.fraction: 16 is not offered for 6 factors"),
    ("design-fraction-type", SIX.replace("FRACTION", "half"),
     "design.fraction: must be an integer >= 1"),
    ("design-repeats", "design: {levels: {lr: [1.0e-3, 1.0e-2]}, repeats: 0}\n",
     "design.repeats: must be an integer >= 1"),
    ("design-seed-factor", "design: {levels: {seed: [1, 2]}}\n",
     "design.levels.seed: the seed is set by design.repeats"),
    ("design-fixed-seed", "design: {levels: {lr: [1.0e-3, 1.0e-2]}}\nfixed: {seed: 3}\n",
     "fixed.seed: a design sets each repeat's seed"),
    ("epochs-searched", "params: {epochs: {type: int, low: 10, high: 40}}\n",
     "params.epochs: epochs cannot be searched: the epoch count is the trial budget"),
    ("stage1-epochs-searched", "params: {stage1_epochs: {type: choice, values: [5, 10]}}\n",
     "params.stage1_epochs: stage1_epochs cannot be searched"),
    ("epochs-in-design", "design: {levels: {epochs: [10, 20]}}\n",
     "design.levels.epochs: epochs cannot be searched"),
    ("sweep-not-mapping", f"params: {{{LR}}}\nsweep: asha\n", "sweep: expected a mapping"),
    ("sweep-unknown", f"params: {{{LR}}}\nsweep: {{searcher: tpe}}\n",
     "sweep.searcher: unknown sweep option"),
    ("sweep-scheduler", f"params: {{{LR}}}\nsweep: {{trial_scheduler: hyperband}}\n",
     "sweep.trial_scheduler: must be asha or fifo"),
    ("sweep-stopper", f"params: {{{LR}}}\nsweep: {{collapse_stopper: 1}}\n",
     "sweep.collapse_stopper: must be true or false"),
    ("sweep-num-samples", f"params: {{{LR}}}\nsweep: {{num_samples: ten}}\n",
     "sweep.num_samples: must be an integer >= 1"),
    ("sweep-num-samples-bool", f"params: {{{LR}}}\nsweep: {{num_samples: true}}\n",
     "sweep.num_samples: must be an integer >= 1"),
    ("sweep-reduction", f"params: {{{LR}}}\nsweep: {{reduction_factor: 1}}\n",
     "sweep.reduction_factor: must be an integer >= 2"),
    ("sweep-grace", f"params: {{{LR}}}\nfixed: {{epochs: 40}}\nsweep: {{grace_period: 41}}\n",
     "sweep.grace_period: 41 exceeds fixed.epochs (40)"),
    ("sweep-num-samples-design", "design: {levels: {lr: [1.0e-3, 1.0e-2]}}\n"
     "sweep: {num_samples: 4}\n", "sweep.num_samples: a design runs all its trials"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_space_file(tmp_path, text: str, expected: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as err:
        load_space(str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg
    assert "\n" not in msg


def test_every_case_is_distinct():
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({c[1] for c in CASES}) == len(CASES)


def test_unreadable_file(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(BadInput, match=rf"^cannot read {path}: "):
        load_space(str(path))
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match=r"binary\.yaml: not a text file"):
        load_space(str(tmp_path / "binary.yaml"))
