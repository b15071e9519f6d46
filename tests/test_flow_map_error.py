"""scripts/flow_map_error.py: the banded map error it reports."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from tests.recipe_checks import load_module


def _script():
    return load_module("scripts", "flow_map_error")


def test_banded_error_averages_the_distance_within_each_band_of_the_noise_norm():
    script = _script()
    radius = torch.tensor([0.5, 0.9, 1.2, 1.7, 2.2, 3.0, 4.0])
    reference = torch.zeros(7, 2)
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [4.0, 0.0], [0.0, 6.0], [0.0, 8.0]])  # distances 5, 1, 2, 3, 4, 6, 8
    assert script.banded_error(x, reference, radius) == pytest.approx([3.0, 2.0, 3.0, 4.0, 7.0])


def test_the_bands_cover_every_noise_norm_once():
    bands = _script().BANDS
    assert bands[0][0] == 0.0 and bands[-1][1] == float("inf")
    assert all(hi == lo for (_, hi), (lo, _) in pairwise(bands))


def test_a_run_without_its_checkpoint_is_refused_by_name(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"data": "checkerboard"}')
    monkeypatch.setattr("sys.argv", ["flow_map_error.py", str(tmp_path)])
    with pytest.raises(SystemExit, match=f"{tmp_path} is not a finished run: it lacks checkpoint.safetensors"):
        _script().main()


def test_a_runs_prediction_sets_how_its_output_is_read(tmp_path):
    """config.json's prediction: x gives u = (z - out)/t, so a 1-step jump from t = 1 lands on the output; absent, out is u."""
    import json
    fme = _script()
    out = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64)
    model = lambda z, t, s, y: out  # noqa: E731
    z, one, zero = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64), torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for config, u in (({"prediction": "x"}, z - out), ({}, out)):
        (tmp_path / "config.json").write_text(json.dumps(config))
        torch.testing.assert_close(fme.average_velocity(tmp_path, model)(z, one, zero), u, rtol=0, atol=1e-15)
