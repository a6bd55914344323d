"""edge/model.py: interpreter selection, metadata validation, generic int8/float I/O."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cli import cli
from edge.dsp import FrontEnd
from edge.errors import HushlinkError
from edge.model import (
    ModelError,
    ModelMetadata,
    StepModel,
    TensorCodec,
    default_model_path,
    load_interpreter,
)

pytestmark = pytest.mark.train  # the fixture model is exported with torch + litert-torch


@pytest.fixture(scope="module")
def test_model(tmp_path_factory) -> Path:
    from stepmodels import build_test_model

    return build_test_model(tmp_path_factory.getbasetemp() / "stepmodel")


@pytest.fixture
def model_copy(test_model, tmp_path) -> Path:
    """A private copy whose metadata a test may corrupt."""
    for suffix in (".tflite", ".json"):
        shutil.copy(test_model.with_suffix(suffix), tmp_path / f"m{suffix}")
    return tmp_path / "m.tflite"


def edit_metadata(path: Path, **changes) -> None:
    md = json.loads(path.with_suffix(".json").read_text())
    md.update(changes)
    path.with_suffix(".json").write_text(json.dumps(md))


def test_loads_with_ai_edge_litert_and_passes_its_test_vector(test_model):
    m = StepModel(test_model)
    assert m.backend == "ai_edge_litert"
    assert m.front_end == FrontEnd()
    assert m.check_test_vector() <= 0.05
    assert m.describe()["state_shapes"] == [[1, 64]]


def test_int8_tensors_are_read_from_the_model_not_assumed(test_model):
    """The PT2E export mixes dtypes (RECIPES.md: float state in, int8 state out; features and
    mask int8 or float depending on the graph): each codec follows its tensor's details."""
    m = StepModel(test_model)
    io = [m.features_t, m.mask_t, *m.state_in_t, *m.state_out_t]
    assert m.state_out_t[0].dtype == np.int8 and m.state_out_t[0].scale > 0
    assert m.state_in_t[0].dtype == np.float32
    for t in io:
        assert (t.dtype.kind in "iu") == (t.scale > 0), t
    details = {d["name"]: d for d in m._it.get_input_details() + m._it.get_output_details()}
    for t in io:
        assert np.dtype(details[t.name]["dtype"]) == t.dtype
        assert details[t.name]["quantization"] == (t.scale, t.zero_point)


def test_step_shapes_ranges_and_state_evolution(test_model):
    m = StepModel(test_model)
    state = m.init_state()
    assert [s.shape for s in state] == [(1, 64)] and not np.any(state[0])
    rng = np.random.default_rng(0)
    feats = rng.uniform(-20, 0, (5, m.n_bins)).astype(np.float32)
    for f in feats:
        mask, state = m.step(f, state)
        assert mask.shape == (m.n_bins,) and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        assert state[0].dtype == np.float32 and state[0].shape == (1, 64)
    assert np.any(state[0]), "the recurrent state must carry information between hops"
    # deterministic: same inputs from zero state give the same masks
    np.testing.assert_array_equal(m.masks(feats), m.masks(feats))


@settings(max_examples=50, deadline=None)
@given(scale=st.floats(1e-3, 1.0), zp=st.integers(-20, 20),
       x=st.lists(st.floats(-5, 5), min_size=4, max_size=4))
def test_int8_codec_round_trip_is_within_half_a_step(scale, zp, x):
    c = TensorCodec(index=0, name="t", shape=(1, 4), dtype=np.dtype(np.int8), scale=scale,
                    zero_point=zp)
    x = np.asarray(x, dtype=np.float32)
    lo, hi = (-128 - zp) * scale, (127 - zp) * scale
    back = c.decode(c.encode(x)).reshape(-1)
    inside = (x >= lo) & (x <= hi)
    assert np.all(np.abs(back[inside] - x[inside]) <= scale / 2 + 1e-6)
    assert np.all((back >= lo - 1e-6) & (back <= hi + 1e-6))  # saturates, never wraps


def test_float_codec_is_identity():
    c = TensorCodec(index=0, name="t", shape=(2,), dtype=np.dtype(np.float32))
    x = np.array([0.25, -3.5], dtype=np.float32)
    np.testing.assert_array_equal(c.decode(c.encode(x)), x)


@pytest.mark.parametrize(("change", "message"), [
    ({"tflite_sha256": "0" * 64}, "sha256"),
    ({"format": "something-else"}, "not a hushlink step model"),
    ({"format_version": 2}, "format_version 2"),
    ({"state_shapes": [[1, 48]]}, "state shape [1, 48]"),
    ({"state_shapes": [[1, 64], [1, 8]]}, "2 state shape(s)"),
    ({"front_end": {**FrontEnd().as_dict(), "window": "hann"}}, "window 'hann'"),
    ({"front_end": {**FrontEnd().as_dict(), "n_fft": 512}}, "n_bins 161"),
    ({"front_end": {**FrontEnd().as_dict(), "n_fft": 640, "n_bins": 321}}, "321 bins"),
    ({"io": {"features": "nope", "mask": "serving_default_output_0_output",
             "state_in": [], "state_out": []}}, "'nope'"),
])
def test_mismatched_metadata_is_refused_with_a_clear_message(model_copy, change, message):
    edit_metadata(model_copy, **change)
    with pytest.raises(ModelError) as e:
        StepModel(model_copy)
    assert message in str(e.value)


def test_runtime_front_end_mismatch_is_refused(test_model):
    with pytest.raises(ModelError, match="does not match the runtime"):
        StepModel(test_model, front_end=FrontEnd(hop=80))


def test_missing_files_and_bad_json(model_copy):
    with pytest.raises(ModelError, match="not found"):
        StepModel(model_copy.with_name("absent.tflite"))
    model_copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        StepModel(model_copy)
    model_copy.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="metadata not found"):
        StepModel(model_copy)


def test_metadata_round_trips_through_dict(test_model):
    md = ModelMetadata.load(test_model.with_suffix(".json"))
    assert ModelMetadata.from_dict(json.loads(json.dumps(md.to_dict()))) == md


def test_signature_keys_work_as_tensor_names(model_copy):
    """Exporters may record signature keys (args_0, output_0) instead of tensor names."""
    md = json.loads(model_copy.with_suffix(".json").read_text())
    a = StepModel(model_copy)
    edit_metadata(model_copy, io={"features": "args_0", "state_in": ["args_1"],
                                  "mask": "output_0", "state_out": ["output_1"]})
    b = StepModel(model_copy)
    f = np.asarray(md["test_vector"]["features"], dtype=np.float32)
    np.testing.assert_array_equal(a.masks(f), b.masks(f))


def test_neither_interpreter_importable_names_both_packages():
    code = ("import sys; sys.modules['ai_edge_litert'] = None; "
            "sys.modules['tflite_runtime'] = None\n"
            "from edge.model import load_interpreter\n"
            "try:\n    load_interpreter()\nexcept Exception as e:\n    print(type(e).__name__, e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("HushlinkError"), r.stdout + r.stderr
    for needle in ("ai-edge-litert", "tflite-runtime", "numpy<2", "pip install"):
        assert needle in r.stdout


def test_interpreter_can_be_forced_and_unknown_ones_are_refused(monkeypatch):
    assert load_interpreter("ai_edge_litert").__module__.startswith("ai_edge_litert")
    monkeypatch.setenv("HUSHLINK_INTERPRETER", "onnx")
    with pytest.raises(HushlinkError, match="unknown TFLite interpreter 'onnx'"):
        load_interpreter()


def test_default_model_path_is_inside_the_package():
    p = default_model_path()
    assert p.name == "default.tflite"
    assert p.parent.name == "models" and p.parent.parent.name == "edge"


def test_cli_reports_a_missing_model_in_one_line(tmp_path, tone):
    from edge.audio import save_audio

    save_audio(tmp_path / "in.wav", tone)
    r = CliRunner().invoke(cli, ["file", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"),
                                 "--model", str(tmp_path / "none.tflite")])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "model file not found" in r.output
    assert "Traceback" not in r.output
