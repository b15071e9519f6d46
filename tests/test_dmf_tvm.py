"""Decoupled MeanFlow and Terminal Velocity Matching: their targets, weights, samplers and the DMF
conversion against oracles (closed-form Gaussian flow, fp64 finite differences, exact limits), and
the two recipes (smoke for every derivative back end, --help, exact --resume, torchrun)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowcore import derivatives, experiment, losses, targets, train
from flowcore.nn import DiT, DiTConfig, MLP, MLPConfig, TimeInputs, TimePairLogVariance, composite_layer_norms
from flowcore.times import LogitNormal, sample_gap_pairs
from tests import oracles
from tests.recipe_checks import (FM_TEACHER_FD_MEAN, assert_help_lists, assert_resume_is_exact, assert_runs_under_torchrun, load_recipe,
                                 mean_fd_over_draws)

ROOT = Path(__file__).resolve().parents[1]
S2 = 0.25  # data variance of the Gaussian oracle


def _gaussian_batch(n: int = 64, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    s = t * torch.rand(n, generator=g, dtype=torch.float64)
    return z, t, s


def _randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter (zero-init layers would otherwise make outputs trivially zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


# ------------------------------------------------------------------------------------ DMF
def test_meanflow_target_fixed_point_and_dmf_loss_vanish_on_gaussian_flow():
    z, t, s = _gaussian_batch()
    v = oracles.velocity(z, t, S2)
    u, du_dt = torch.func.jvp(lambda z_, t_: oracles.average_velocity(z_, t_, s, S2), (z, t), (v, torch.ones_like(t)))
    target = targets.meanflow_target(v, t, s, du_dt)
    torch.testing.assert_close(target, u, rtol=1e-9, atol=1e-10)
    pred = u.clone().requires_grad_(True)
    m = losses.squared_error(pred, target.detach(), losses.Reduce.MEAN)
    assert m.abs().max() < 1e-18
    lv = torch.linspace(-1, 1, z.shape[0], dtype=torch.float64)
    loss = losses.adaptive_cauchy(m, lv, 1e-2)
    torch.testing.assert_close(loss, math.log(1e-2) + lv, rtol=1e-9, atol=1e-12)  # the loss's minimum over pred
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    assert grad.abs().max() < 1e-8
    wrong = targets.meanflow_target(v, t, s, 1.1 * du_dt)  # a wrong derivative does not give the fixed point
    assert (wrong - u).abs().max() > 1e-3


def test_adaptive_cauchy_gradient_weight_matches_the_paper():
    """d/dpred [log(m e^{-lv} + c) + lv] = (dm/dpred) / (m + c e^{lv}): DMF's adaptive weight, with m
    and lv entering the weight without a stop-gradient; d/dlv = c / (m e^{-lv} + c) > 0."""
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(16, 8, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(16, 8, generator=g, dtype=torch.float64)
    lv = (0.5 * torch.randn(16, generator=g, dtype=torch.float64)).requires_grad_(True)
    c = 1e-2
    m = losses.squared_error(pred, target, losses.Reduce.MEAN)
    g_pred, g_lv = torch.autograd.grad(losses.adaptive_cauchy(m, lv, c).sum(), (pred, lv))
    m0, lv0 = m.detach(), lv.detach()
    expect = (2 * (pred.detach() - target) / 8) / (m0 + c * lv0.exp())[:, None]
    torch.testing.assert_close(g_pred, expect, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_lv, c / (m0 * (-lv0).exp() + c), rtol=1e-10, atol=1e-14)


def test_time_pair_log_variance_starts_at_zero_and_depends_on_both_times():
    head = TimePairLogVariance()
    t, s = torch.rand(5), torch.rand(5)
    assert torch.equal(head(t, s), torch.zeros(5))
    _randomize(head)
    assert not torch.allclose(head(t, s), head(t, s * 0.5)) and not torch.allclose(head(t, s), head(t * 0.5, s))
    with pytest.raises(ValueError, match="same shape"):
        head(t, s[:3])


MODELS = [
    (MLP, MLPConfig(dim=64, width=32, depth=3, num_classes=10)),
    (DiT, DiTConfig(width=32, depth=3, heads=2, num_classes=10)),
    (MLP, MLPConfig(dim=64, width=32, depth=3, num_classes=10, time_inputs=TimeInputs.T_S)),
]


@pytest.mark.parametrize("kind,config", MODELS, ids=["mlp", "dit", "mlp_t_s"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_decoupled_model_is_the_velocity_model_at_s_equal_t(kind, config, k):
    torch.manual_seed(0)
    teacher = _randomize(kind(config)).eval()
    student = kind(dataclasses.replace(config, decoupled_blocks=k)).eval()
    student.load_state_dict(teacher.state_dict())  # no new parameters: the checkpoint loads unchanged (strict)
    z, t, y = torch.randn(6, 1, 8, 8), torch.rand(6), torch.randint(0, 11, (6,))
    s = t * torch.rand(6)
    assert torch.equal(student(z, t, t, y), teacher(z, t, t, y))
    # s != t: the decoupled network differs from the velocity network's own (t, s) reading, and it
    # is the velocity network evaluated with its late blocks at s: changing s moves the output
    assert (student(z, t, s, y) - teacher(z, t, s, y)).abs().max() > 1e-3
    assert (student(z, t, s, y) - student(z, t, t, y)).abs().max() > 1e-3


def test_decoupled_early_blocks_see_only_t():
    """With every block decoupled (k = depth) only the output layer sees s: the trunk's output at
    (t, s) equals the trunk's output at (t, t), so dF/ds comes from the output layer alone."""
    torch.manual_seed(0)
    model = _randomize(MLP(MLPConfig(dim=64, width=32, depth=2, num_classes=10, decoupled_blocks=2))).eval()
    trunk = []
    model.head.register_forward_hook(lambda mod, args, out: trunk.append(args[0].clone()))
    z, t, y = torch.randn(4, 64), torch.rand(4), torch.randint(0, 10, (4,))
    model(z, t, 0.5 * t, y)
    model(z, t, t, y)
    assert torch.equal(trunk[0], trunk[1])


def test_decoupled_config_fails_loudly():
    with pytest.raises(ValueError, match="decoupled_blocks must be in"):
        MLPConfig(dim=2, depth=2, decoupled_blocks=3)
    with pytest.raises(ValueError, match="contains t"):
        MLPConfig(dim=2, depth=2, decoupled_blocks=1, time_inputs=TimeInputs.GAP)
    from flowcore.nn.dit import Conditioning
    with pytest.raises(ValueError, match="adaLN"):
        DiTConfig(depth=2, decoupled_blocks=1, conditioning=Conditioning.IN_CONTEXT)


def test_fm_checkpoint_loads_into_the_decoupled_model(tmp_path):
    load_recipe("fm").main(["--smoke", "--out", str(tmp_path)])
    source = experiment.load_source("digits")
    teacher = experiment.load_teacher(tmp_path / train.CHECKPOINT_NAME, source, train.Dist(0, 1, torch.device("cpu")))
    state = {k: v + 0.1 * torch.randn_like(v) for k, v in teacher.state_dict().items()}  # non-trivial weights
    teacher.load_state_dict(state)
    cfg = teacher.config
    student = experiment.build_model(experiment.ModelKind.MLP, source, width=cfg.width, depth=cfg.depth, decoupled_blocks=1)
    student.load_state_dict(state)
    z, t, y = torch.randn(8, 1, 8, 8), torch.rand(8), torch.randint(0, 11, (8,))
    assert torch.equal(student(z, t, t, y), teacher(z, t, t, y))


# ------------------------------------------------------------------------------------ TVM
def _terminal_velocity_of_oracle(z, t, s):
    F, dF_ds = torch.func.jvp(lambda s_: oracles.average_velocity(z, t, s_, S2), (s,), (torch.ones_like(s),))
    return F, dF_ds, targets.terminal_velocity(F, dF_ds, t, s)


def test_terminal_velocity_of_exact_map_is_velocity_at_landing_point():
    z, t, s = _gaussian_batch()
    F, dF_ds, dfds = _terminal_velocity_of_oracle(z, t, s)
    landing = targets.flow_map_step(z, F, t, s)
    torch.testing.assert_close(landing, oracles.flow_map(z, t, s, S2), rtol=1e-12, atol=1e-12)
    target = oracles.velocity(landing, s, S2)
    torch.testing.assert_close(dfds, target, rtol=1e-9, atol=1e-10)
    assert losses.squared_error(dfds, target, losses.Reduce.MEAN).max() < 1e-18
    # a wrong map (10% too fast) violates the condition
    wrong = targets.terminal_velocity(1.1 * F, 1.1 * dF_ds, t, s)
    landing_wrong = targets.flow_map_step(z, 1.1 * F, t, s)
    assert losses.squared_error(wrong, oracles.velocity(landing_wrong, s, S2), losses.Reduce.MEAN).max() > 1e-4


def test_terminal_velocity_at_s_equal_t_is_flow_matching():
    """At s = t the terminal velocity is F(z, t, t) whatever dF/ds, and the exact map's is v(z, t)."""
    z, t, _ = _gaussian_batch()
    F, dF_ds, dfds = _terminal_velocity_of_oracle(z, t, t.clone())
    torch.testing.assert_close(dfds, oracles.velocity(z, t, S2), rtol=1e-12, atol=1e-12)
    junk = torch.randn_like(F)
    torch.testing.assert_close(targets.terminal_velocity(F, junk, t, t), F, rtol=0, atol=0)
    with pytest.raises(ValueError, match="s must be <="):
        targets.terminal_velocity(F, dF_ds, t, t + 0.01)


def test_guidance_scale_weight_is_inverse_square_and_detached():
    w = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    weight = losses.guidance_scale_weight(w)
    torch.testing.assert_close(weight, torch.tensor([1.0, 0.25, 0.0625]))
    assert not weight.requires_grad
    with pytest.raises(ValueError, match=">= 1"):
        losses.guidance_scale_weight(torch.tensor([0.5]))


def _tvm_loss(model: torch.nn.Module, z, t, s, y, target, grad_through: bool) -> torch.Tensor:
    F, dF_ds = derivatives.jvp(lambda s_: model(z, t, s_, y), (s,), (torch.ones_like(s),), grad_through_tangent=grad_through)
    return losses.squared_error(targets.terminal_velocity(F, dF_ds, t, s), target, losses.Reduce.MEAN).mean()


def _directional_gradients(model: torch.nn.Module, grad_through: bool = True) -> tuple[float, float]:
    """(<grad L, d>, central difference of L along d) for TVM's terminal-velocity loss, fp64."""
    z, t, s = _gaussian_batch(n=8)
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(1))
    target = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = list(model.parameters())
    grads = torch.autograd.grad(_tvm_loss(model, z, t, s, y, target, grad_through), params)
    g = torch.Generator().manual_seed(3)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
    h = 1e-6

    def shifted(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * h * d)
        value = _tvm_loss(model, z, t, s, y, target, True).item()
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * h * d)
        return value

    return analytic, (shifted(1.0) - shifted(-1.0)) / (2 * h)


def _tiny_mlp() -> MLP:
    torch.manual_seed(0)
    return _randomize(MLP(MLPConfig(dim=3, width=16, depth=2, cond_width=16, num_classes=4))).double()


def test_gradient_through_the_terminal_jvp_matches_finite_differences_fp64():
    model = composite_layer_norms(_tiny_mlp())
    analytic, numeric = _directional_gradients(model)
    assert abs(analytic - numeric) <= 1e-7 * abs(numeric) + 1e-10
    stopped, _ = _directional_gradients(model, grad_through=False)
    assert abs(stopped - numeric) > 1e-3 * abs(numeric)  # stopping the gradient at the JVP changes it


def test_torch_fused_layer_norm_breaks_the_gradient_through_a_jvp():
    """Why TVM swaps in CompositeLayerNorm: with torch's fused layer_norm the same gradient is wrong
    (if a torch release fixes it, this test fails and the swap can go); the forward is unchanged."""
    fused = _tiny_mlp()
    analytic, numeric = _directional_gradients(fused)
    assert abs(analytic - numeric) > 1e-3 * abs(numeric)
    composite = composite_layer_norms(_tiny_mlp())
    assert composite.state_dict().keys() == fused.state_dict().keys()
    z, t, s = _gaussian_batch(n=8)
    y = torch.randint(0, 5, (8,))
    torch.testing.assert_close(composite(z, t, s, y), fused(z, t, s, y), rtol=1e-12, atol=1e-12)


def test_gap_pairs_follow_the_truncated_logit_normal():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    t, s = sample_gap_pairs(n, LogitNormal(-0.8, 1.0), LogitNormal(-0.4, 1.0), generator=g)
    assert (s >= 0).all() and (t <= 1).all() and (s < t).all()
    gap = t - s
    logit_gap = torch.logit(gap.double())
    assert abs(logit_gap.mean().item() + 0.8) < 0.02 and abs(logit_gap.std().item() - 1.0) < 0.02
    # P(s <= a | g) = Phi((logit a - mu) / sd) / Phi((logit(1 - g) - mu) / sd): this ratio is U(0, 1)
    u = torch.special.ndtr((torch.logit(s.double()) + 0.4)) / torch.special.ndtr(torch.logit(1 - gap.double()) + 0.4)
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.01


# ------------------------------------------------------------------------------------ recipes
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def dit_teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dit_teacher")
    load_recipe("fm").main(["--smoke", "--model", "dit", "--out", str(out)])
    return out / train.CHECKPOINT_NAME


@pytest.mark.parametrize("name,extra", [
    ("dmf", ["--derivative", "jvp"]), ("dmf", ["--derivative", "fd", "--loss", "cauchy"]), ("dmf", ["--model", "dit", "--derivative", "fused"]),
    ("tvm", ["--derivative", "jvp"]), ("tvm", ["--derivative", "fd", "--no-cfg-weight"]), ("tvm", ["--model", "dit", "--derivative", "fused"]),
])
def test_smoke_writes_every_output(name, extra, tmp_path, request):
    if name == "dmf" and "dit" in extra:
        extra = [*extra, "--teacher", str(request.getfixturevalue("dit_teacher"))]
    results = load_recipe(name).main(["--smoke", "--out", str(tmp_path), *extra])
    files = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "metrics.json", "config.json", "loss.png", "samples_1nfe.png"} <= files
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = {"floor", "1nfe", "2nfe", "4nfe"} | ({"converted_1nfe", "converted_2nfe", "converted_4nfe"} if name == "dmf" else set())
    assert metrics["results"].keys() == results.keys() == expected
    for row in results.values():
        assert all(v == v for v in row.values())


def test_dmf_rejects_a_teacher_of_another_size(tmp_path):
    with pytest.raises(SystemExit, match="--width"):
        load_recipe("dmf").main(["--smoke", "--width", "16", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--grad-clip"):
        load_recipe("dmf").parse(["--grad-clip", "-1"])


def test_dmf_cauchy_constant_only_with_the_cauchy_loss():
    """--c is the Cauchy loss's constant: given with the squared error it would do nothing, so it is refused; it defaults
    to 0.01 either way (the saved config stays as before) and must be positive."""
    dmf = load_recipe("dmf")
    with pytest.raises(SystemExit, match="no effect with --loss squared"):
        dmf.parse(["--c", "0.1"])
    with pytest.raises(SystemExit, match="--c must be > 0"):
        dmf.parse(["--loss", "cauchy", "--c", "0"])
    assert dmf.parse([]).c == 0.01 and dmf.parse(["--loss", "cauchy", "--c", "0.1"]).c == 0.1


def test_dmf_clips_the_gradient_norm_by_default(tmp_path):
    """--grad-clip 1.5 (the paper's) by default: the history records the pre-clip global norm of every step; 0 turns it off."""
    from safetensors import safe_open
    for flags, clipped in (([], True), (["--grad-clip", "0"], False)):
        out = tmp_path / str(clipped)
        load_recipe("dmf").main(["--smoke", "--steps", "3", "--out", str(out), *flags])
        with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as f:
            history = json.loads(f.metadata()["history"])
        assert ("grad_norm" in history) is clipped
        if clipped:
            assert len(history["grad_norm"]) == 3 and all(n > 0 for n in history["grad_norm"])


@pytest.mark.parametrize("name", ["dmf", "tvm"])
def test_help_lists_flags(name):
    assert_help_lists(name, "--smoke", "--resume", "--derivative")


@pytest.mark.parametrize("name", ["dmf", "tvm"])
def test_resume_continues_exactly(name, tmp_path):
    (a, _), _ = assert_resume_is_exact(name, tmp_path)
    roles = {k.split("/")[1] for k in a if k.startswith("module/")}
    assert roles == ({"model", "ema_0.999"} if name == "dmf" else {"model", "ema_0.999", "ema_0.99"})  # dmf: log_var only with --loss cauchy


@pytest.mark.parametrize("name", ["dmf", "tvm"])
def test_runs_unchanged_under_torchrun(name, tmp_path):
    assert_runs_under_torchrun(name, tmp_path)


# ------------------------------------------------------------------------------------ bars (slow)
def _default_run(tmp_path: Path, name: str, *flags: str) -> dict:
    out = tmp_path / name
    subprocess.run([sys.executable, str(ROOT / "recipes" / f"{name}.py"), "--out", str(out), *flags], check=True, env=_env())
    return json.loads((out / "metrics.json").read_text())["results"]


@pytest.mark.slow
def test_dmf_default_bar(tmp_path):
    r = _default_run(tmp_path, "dmf")
    assert mean_fd_over_draws(tmp_path / "dmf", "1nfe") <= 1.5 * FM_TEACHER_FD_MEAN and r["1nfe"]["class_acc"] >= 0.9
    assert r["2nfe"]["fd"] <= r["1nfe"]["fd"]
    assert r["1nfe"]["fd"] < r["converted_1nfe"]["fd"]


@pytest.mark.slow
def test_tvm_default_bar(tmp_path):
    r = _default_run(tmp_path, "tvm")
    assert mean_fd_over_draws(tmp_path / "tvm", "1nfe") <= 1.5 * FM_TEACHER_FD_MEAN and r["1nfe"]["class_acc"] >= 0.9
    assert r["4nfe"]["fd"] <= r["2nfe"]["fd"] <= r["1nfe"]["fd"]
