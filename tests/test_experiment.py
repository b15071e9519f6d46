"""The recipes' shared plumbing: the learning-rate tail decay and loading a teacher checkpoint."""

from __future__ import annotations

import pytest
import torch

from flowcore import experiment, train
from tests.test_recipes import load_recipe


def test_linear_decay_tail_follows_its_formula():
    schedule = experiment.linear_decay_tail(100, 0.25)
    assert [schedule(k) for k in (0, 74, 75, 76, 90, 99)] == pytest.approx([1.0, 1.0, 1.0, 24 / 25, 10 / 25, 1 / 25])
    assert experiment.linear_decay_tail(100, 0.0) is None


@pytest.mark.parametrize("fourier", [[], ["--fourier-features", "4", "--fourier-scale", "2"]])
def test_teacher_loads_the_fm_checkpoints_ema_weights(tmp_path, fourier):
    """The teacher is rebuilt from its checkpoint's config, Fourier input features (and their saved frequencies) included."""
    load_recipe("fm").main(["--smoke", "--data", "checkerboard", "--out", str(tmp_path), *fourier])
    source = experiment.load_source("checkerboard")
    dist = train.Dist(0, 1, torch.device("cpu"))
    teacher = experiment.load_teacher(tmp_path / train.CHECKPOINT_NAME, source, dist)
    config = train.checkpoint_info(tmp_path / train.CHECKPOINT_NAME).config
    reference = experiment.build_model(experiment.ModelKind.MLP, source, width=config["width"], depth=config["depth"],
                                       fourier_features=config["fourier_features"], fourier_scale=config["fourier_scale"])
    assert teacher.config.fourier_features == (4 if fourier else 0)
    train.load_weights(tmp_path / train.CHECKPOINT_NAME, {train.ema_name(config["ema"]): reference})
    z, t = torch.randn(16, 2), torch.rand(16)
    assert torch.equal(teacher(z, t, t), reference.eval()(z, t, t))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="trained on 'checkerboard', not on 'moons'"):
        experiment.load_teacher(tmp_path / train.CHECKPOINT_NAME, experiment.load_source("moons"), dist)


def test_fourier_flags_are_checked_by_name():
    fm = load_recipe("fm")
    for bad, match in ((["--fourier-features", "-1"], "--fourier-features"), (["--fourier-scale", "0"], "--fourier-scale"),
                       (["--model", "dit", "--data", "digits", "--fourier-features", "8"], "MLP option")):
        with pytest.raises(SystemExit, match=match):
            fm.parse(["--smoke", *bad])


@pytest.mark.parametrize("name", ["meanflow", "pmf", "imf", "alphaflow", "jit", "latent_forcing", "metaflow"])
def test_t_floor_is_checked_by_name_before_training(name):
    """--t-floor clips t in (z - x)/t: outside (0, 1] the recipe stops at parse time, naming the flag."""
    recipe = load_recipe(name)
    for bad in ("0", "-0.1", "1.5"):
        with pytest.raises(SystemExit, match=r"--t-floor must be in \(0, 1\]"):
            recipe.parse(["--smoke", "--t-floor", bad])
    assert recipe.parse(["--smoke", "--t-floor", "1"]).t_floor == 1.0


def test_meanflow_training_velocity_combines_the_networks_own_velocities():
    from flowcore import guidance

    def velocity(z, t, s, y):  # conditional rows give 2 z, null-class rows give -z
        assert torch.equal(t, s)
        return torch.where((y == 10)[:, None], -z, 2 * z)

    z, v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t, y = torch.rand(4, dtype=torch.float64), torch.tensor([1, 2, 3, 4])
    dropped = torch.tensor([False, True, False, False])
    z.requires_grad_(True)
    out = guidance.meanflow_training_velocity(velocity, z, t, v, y, dropped, 10, omega=1.5, kappa=0.5)
    expected = 1.5 * v + 0.5 * (2 * z) + (1 - 1.5 - 0.5) * (-z)
    assert torch.allclose(out[~dropped], expected[~dropped].detach(), atol=1e-14)
    assert torch.equal(out[1], v[1]) and not out.requires_grad
    with pytest.raises(ValueError, match="dropped must be a"):
        guidance.meanflow_training_velocity(velocity, z, t, v, y, dropped.float(), 10, omega=1.5, kappa=0.5)
    # unguided (omega = 1, kappa = 0): the formula's v_g = v exactly, so the network is skipped
    calls = []
    unguided = guidance.meanflow_training_velocity(lambda *a: calls.append(a) or velocity(*a), z, t, v, y, dropped, 10, omega=1.0, kappa=0.0)
    assert torch.equal(unguided, v) and calls == []
    with_network = guidance.meanflow_guided_velocity(v, velocity(z, t, t, y), velocity(z, t, t, torch.full_like(y, 10)), 1.0, 0.0)
    assert torch.equal(with_network.detach(), v)
