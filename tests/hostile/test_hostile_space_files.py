"""Hostile space files: alias bombs, deep nesting, unhashable keys, binary bytes, per-run paths
and absurd bounds all fail fast with one line (exit 2) naming the file; random malformed files
only ever give a Space or BadInput."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hostile_lib import CORPUS, camotune, one_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camotune.errors import BadInput
from camotune.spaces import Space, load_space
from camotune.spaces.dist import DIST_TYPES
from camotune.spaces.space import TOP_KEYS
from camotune.trainer.config import FIELDS
from camotune.yamlfile import parse_yaml

SECONDS = 5.0  # each case must be refused well within this

# file -> a fragment of the one-line message
STORED = {
    "alias-bomb.yaml": "aliases are expanded",
    "unhashable-key.yaml": "a key must be a plain value",
    "recursive-alias.yaml": "recursive alias",
    "duplicate-key.yaml": "duplicate key 'lr'",
    "resume-from-fixed.yaml": "fixed.resume_from: resume_from cannot be set by a space file",
    "resume-from-design.yaml": "design.levels.resume_from",
    "checkpoint-dir-param.yaml": "params.checkpoint_dir",
    "dataset-path-point.yaml": "points[0].dataset_path",
    "lr-up-to-1e300.yaml": "params.lr: --lr must lie in [0, 10]",
    "lr-nan.yaml": "params.lr: low: must be a finite number",
    "lr-inf.yaml": "params.lr: high: must be a finite number",
    "batch-1e12.yaml": "params.batch_size: --batch-size must lie in [1, 4096]",
    "img-3200000.yaml": "params.img_size: --img-size must lie in [32, 4096]",
    "fixed-wrong-type.yaml": "fixed.batch_size: --batch-size must be an integer",
    "point-wrong-type.yaml": "points[0].batch_size",
    "point-top-k.yaml": "--top-k must be <= --num-experts",
}

LR = "params:\n  lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n"
GENERATED = {
    "deep-list.yaml": (LR + "fixed:\n  backbone: " + "[" * 100_000 + "]" * 100_000 + "\n",
                       "nested deeper than 50"),
    "deep-mapping.yaml": (LR + "fixed: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n",
                          "nested deeper than 50"),
    "binary.yaml": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
                    "not a text file"),
    "latin-1.yaml": ("description: caf\xe9\n" + LR).encode("latin-1"),
    "huge.yaml": (LR + "description: '" + "x" * (5 * 1024 * 1024) + "'\n", "larger than"),
    "long-value.yaml": (LR + "fixed:\n  backbone: [" + ", ".join(["lol"] * 5000) + "]\n",
                        "--backbone must be a string"),
}
GENERATED["latin-1.yaml"] = (GENERATED["latin-1.yaml"], "UTF-8 expected")


def _write(folder: Path, name: str) -> tuple[Path, str]:
    path = folder / name
    if name in STORED:
        path.write_bytes((CORPUS / "spaces" / name).read_bytes())
        return path, STORED[name]
    content, fragment = GENERATED[name]
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path, fragment


@pytest.mark.parametrize("name", [*STORED, *GENERATED])
def test_hostile_space_file_is_one_short_line_within_seconds(name: str, tmp_path: Path) -> None:
    path, fragment = _write(tmp_path, name)
    t0 = time.perf_counter()
    with pytest.raises(BadInput) as exc:
        load_space(str(path))
    assert time.perf_counter() - t0 < SECONDS
    message = str(exc.value)
    assert "\n" not in message and len(message) < 400, message[:500]
    assert message.startswith(str(path)) and fragment in message, message


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alias-bomb.yaml", "unhashable-key.yaml", "deep-list.yaml",
                                  "binary.yaml", "latin-1.yaml", "resume-from-fixed.yaml"])
def test_sweep_refuses_the_file_before_ray_starts(name: str, tmp_path: Path) -> None:
    path, fragment = _write(tmp_path, name)
    storage = tmp_path / "runs"
    t0 = time.perf_counter()
    result = camotune("sweep", "--space", str(path), "--dataset-path", str(tmp_path),
                      "--storage-path", str(storage), cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert fragment in one_line(result.stderr)
    assert time.perf_counter() - t0 < 60
    assert not storage.exists()  # nothing written, Ray never started


# -- random malformed space files ----------------------------------------------------------------

_KEYS = st.one_of(st.sampled_from([*TOP_KEYS, *FIELDS, "type", "low", "high", "values",
                                   "levels", "fraction", "repeats", "factorial"]),
                  st.text(max_size=8))
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                     st.sampled_from([*DIST_TYPES, *FIELDS, "asha", "edgenext_xx_small"]))
_TREES = st.recursive(_SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(_KEYS, kids, max_size=4)), max_leaves=24)
_SPACES = st.dictionaries(st.one_of(st.sampled_from(TOP_KEYS), _KEYS), _TREES, max_size=6)


def _only_space_or_bad_input(build) -> None:
    t0 = time.perf_counter()
    try:
        assert isinstance(build(), Space)
    except BadInput as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
    assert time.perf_counter() - t0 < SECONDS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_SPACES)
def test_random_space_data_gives_a_space_or_bad_input(data: dict) -> None:
    _only_space_or_bad_input(lambda: Space.from_dict(data, source="random.yaml", name="r"))


_FRAGMENTS = st.sampled_from(["params:", "fixed:", "points:", "design:", "sweep:", "lr:",
                              "batch_size:", "{type: choice, values: [", "{type: loguniform, ",
                              "low: 1e-5", "high: .inf", "&a ", "*a", "&b [*a, *a, *a]", "[",
                              "]", "{", "}", ", ", ": ", "? ", "- ", "\n", "\n  ", "\n    ",
                              "!!python/object:os.system", "'", '"', "#", "|", ">", "\t",
                              "\x00", "\ufeff", "1", "-1", "nan", "null", "true"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(_FRAGMENTS, max_size=40))
def test_random_yaml_text_gives_a_space_or_bad_input(parts: list[str]) -> None:
    text = "".join(parts)
    _only_space_or_bad_input(
        lambda: Space.from_dict(parse_yaml(text, "random.yaml"), source="random.yaml", name="r"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_SPACES)
def test_random_space_through_yaml_text(data: dict) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    _only_space_or_bad_input(
        lambda: Space.from_dict(parse_yaml(text, "random.yaml"), source="random.yaml", name="r"))
