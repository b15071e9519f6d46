"""flowcore.metrics against closed forms, and the shipped digits classifier against its contract."""

import hashlib
import math

import pytest
import safetensors.torch
import torch

from flowcore import data, metrics

f64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- sliced W2


def test_projections_are_fixed_unit_directions():
    p = metrics.projections(3, 256, seed=0)
    assert p.shape == (256, 3) and p.dtype == f64
    torch.testing.assert_close(p.norm(dim=1), torch.ones(256, dtype=f64))
    assert torch.equal(p, metrics.projections(3, 256, seed=0))
    assert not torch.equal(p, metrics.projections(3, 256, seed=1))


def test_sliced_w2_of_a_shift_is_the_projected_shift():
    """For y = x + delta every projection is a shift by theta.delta, so W2(theta.x, theta.y) = |theta.delta|
    exactly and SW2 = sqrt(mean_p (theta_p.delta)^2), which is |delta| / sqrt(d) in expectation."""
    x = torch.randn(700, 3, generator=gen(0), dtype=f64)
    delta = torch.tensor([0.3, -0.4, 1.2], dtype=f64)
    exact = (metrics.projections(3, 256, 0) @ delta).square().mean().sqrt().item()
    assert metrics.sliced_w2(x, x + delta) == pytest.approx(exact, rel=1e-10)
    assert exact == pytest.approx(delta.norm().item() / math.sqrt(3), rel=0.1)


def test_sliced_w2_zero_for_identical_distributions_including_unequal_sizes():
    x = torch.randn(300, 2, generator=gen(1))
    assert metrics.sliced_w2(x, x) == 0
    assert metrics.sliced_w2(x, x[torch.randperm(300, generator=gen(2))]) == 0
    assert metrics.sliced_w2(x, torch.cat([x, x, x])) == pytest.approx(0, abs=1e-12)  # same empirical law


def test_sliced_w2_unequal_sizes_1d_closed_form():
    """In 1D every direction is +-1 and W2^2 = int_0^1 (F_x^{-1}(u) - F_y^{-1}(u))^2 du exactly."""
    assert metrics.sliced_w2(torch.zeros(1, 1), torch.tensor([[0.0], [1.0]])) == pytest.approx(math.sqrt(0.5), rel=1e-12)
    # quantiles: x = 0 on (0, 1/2], 1 on (1/2, 1]; y = 0, 1, 2 on thirds. Gaps: (1/3,1/2]: 1, (1/2,2/3]: 0, (2/3,1]: 1
    w2sq = (1 / 2 - 1 / 3) * 1 + (1 - 2 / 3) * 1
    assert metrics.sliced_w2(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [1.0], [2.0]])) == pytest.approx(math.sqrt(w2sq), rel=1e-12)


# ------------------------------------------------------------------------------------ energy distance


def test_energy_distance_closed_forms_and_sign():
    x = torch.randn(400, 2, generator=gen(3))
    assert metrics.energy_distance(x, x) == pytest.approx(0, abs=1e-12)
    assert metrics.energy_distance(torch.zeros(1, 1), torch.ones(1, 1)) == pytest.approx(2.0)
    # {0} vs {0, 1}: 2 * 1/2 - 0 - (0 + 1 + 1 + 0)/4 = 1/2
    assert metrics.energy_distance(torch.zeros(1, 1), torch.tensor([[0.0], [1.0]])) == pytest.approx(0.5)
    shifted = metrics.energy_distance(x, x + torch.tensor([0.5, 0.0]))
    assert shifted > 0.05
    assert metrics.energy_distance(x + torch.tensor([1.0, 0.0]), x) > shifted  # grows with the shift


def test_energy_distance_chunking_matches_dense_formula():
    x = torch.randn(1500, 2, generator=gen(4), dtype=f64)  # more rows than one chunk
    y = torch.randn(1100, 2, generator=gen(5), dtype=f64) * 1.2
    dense = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
    assert metrics.energy_distance(x, y) == pytest.approx(dense.item(), rel=1e-9)


@pytest.mark.parametrize("metric, spread, wrong", [(metrics.sliced_w2, (0.4, 1.8), 3.5), (metrics.energy_distance, (0.2, 3.0), 10)])
def test_metric_with_floor_on_checkerboard(metric, spread, wrong):
    """Data against data sits near its floor (over seeds, at 1000 points, the ratio of fresh data
    ranged 0.6-1.45 for SW2 and 0.34-2.2 for the heavier-tailed energy distance); the same data
    scaled by 1.3 sits far above it (SW2 ratio 4.9, energy 18)."""
    sample = data.Toy2D.CHECKERBOARD.sample
    good = sample(1000, gen(100))
    assert spread[0] < metrics.metric_with_floor(metric, good, sample, seed=0, floor_repeats=3).ratio < spread[1]
    assert metrics.metric_with_floor(metric, 1.3 * good, sample, seed=0, floor_repeats=3).ratio > wrong


def test_sample_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="same dimension"):
        metrics.sliced_w2(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="x contains NaN"):
        metrics.energy_distance(torch.full((5, 2), float("nan")), torch.zeros(5, 2))
    with pytest.raises(TypeError, match="y must be a floating-point"):
        metrics.sliced_w2(torch.zeros(5, 2), torch.zeros(5, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        metrics.sliced_w2(torch.zeros(5), torch.zeros(5, 1))


# ------------------------------------------------------------------------------------ Frechet distance


def with_exact_moments(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n points whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn(n, len(mean), generator=gen(seed), dtype=f64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # whitened: cov = I
    return z @ torch.linalg.cholesky(cov).T + mean


def fd_2x2_closed_form(m1, c1, m2, c2) -> float:
    """For 2x2 PD matrices, C1 C2 has positive eigenvalues l1, l2 and
    (Tr (C1 C2)^{1/2})^2 = l1 + l2 + 2 sqrt(l1 l2) = Tr(C1 C2) + 2 sqrt(det C1 det C2)."""
    tr_root = math.sqrt((c1 @ c2).trace().item() + 2 * math.sqrt(c1.det().item() * c2.det().item()))
    return ((m1 - m2) ** 2).sum().item() + c1.trace().item() + c2.trace().item() - 2 * tr_root


M1, M2 = torch.tensor([0.5, -1.0], dtype=f64), torch.tensor([-0.3, 0.2], dtype=f64)
C1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=f64)
C2 = torch.tensor([[0.5, -0.3], [-0.3, 1.5]], dtype=f64)  # does not commute with C1


def test_frechet_distance_exact_moments_match_closed_form():
    a = with_exact_moments(50, M1, C1, seed=0)
    b = with_exact_moments(80, M2, C2, seed=1)
    expected = fd_2x2_closed_form(M1, C1, M2, C2)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert metrics.frechet_distance(b, a) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_large_samples_approach_closed_form():
    a = torch.randn(200_000, 2, generator=gen(2), dtype=f64) @ torch.linalg.cholesky(C1).T + M1
    b = torch.randn(200_000, 2, generator=gen(3), dtype=f64) @ torch.linalg.cholesky(C2).T + M2
    assert metrics.frechet_distance(a, b) == pytest.approx(fd_2x2_closed_form(M1, C1, M2, C2), rel=0.01)


def test_frechet_distance_high_dim_commuting_closed_form_and_zero():
    """Diagonal covariances commute: FD = ||dm||^2 + sum_i (sqrt(d1_i) - sqrt(d2_i))^2."""
    d = 16
    d1 = torch.linspace(0.1, 3.0, d, dtype=f64)
    d2 = torch.linspace(2.0, 0.05, d, dtype=f64)
    m = torch.linspace(-1, 1, d, dtype=f64)
    a = with_exact_moments(200, torch.zeros(d, dtype=f64), torch.diag(d1), seed=4)
    b = with_exact_moments(300, m, torch.diag(d2), seed=5)
    expected = (m**2).sum() + ((d1.sqrt() - d2.sqrt()) ** 2).sum()
    assert metrics.frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-9)
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-9 * d1.sum().item())
    # a rank-deficient covariance (fewer points than dimensions) stays finite and exact for identical sets
    # (rounding-level eigenvalues of the null space contribute sqrt(1e-16) each, hence the looser bound)
    few = torch.randn(5, d, generator=gen(6), dtype=f64)
    assert abs(metrics.frechet_distance(few, few)) < 1e-6 * torch.cov(few.T).trace().item()


def test_frechet_distance_rejects_bad_inputs():
    with pytest.raises(ValueError, match="n >= 2"):
        metrics.frechet_distance(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="same dimension"):
        metrics.frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))


# ---------------------------------------------------------------------------- the digits classifier


@pytest.fixture(scope="module")
def judge():
    return metrics.DigitsJudge.load()


def test_shipped_classifier_provenance(judge):
    """Trained on these digits, with this held-out split (the split's indices are hashed in the file)."""
    meta = judge.metadata
    assert meta["flowcore_kind"] == "digits_classifier"
    assert meta["data_sha256"] == data.digits_sha256()
    _, labels = data.load_digits()
    heldout, _ = data.stratified_split(labels, data.DIGITS_HELDOUT_FRACTION, data.DIGITS_HELDOUT_SEED)
    assert meta["heldout_indices_sha256"] == hashlib.sha256(heldout.numpy().tobytes()).hexdigest()
    assert metrics.default_classifier_path().is_file()
    assert sum(v.numel() for v in judge.model.state_dict().values()) * 4 < 1_000_000


def test_shipped_classifier_heldout_accuracy(judge):
    _, (x_held, y_held) = data.digits_train_heldout()
    acc = judge.class_accuracy(x_held, y_held)
    assert acc >= 0.97
    assert acc == pytest.approx(float(judge.metadata["heldout_accuracy"]), abs=1e-6)  # the weights are the trained ones
    pred = judge.predict(x_held)
    for c in range(10):
        assert (pred[y_held == c] == c).double().mean() >= 0.9, f"class {c}"


def test_classifier_tolerates_small_noise_and_rejects_shuffled_labels(judge):
    x, y = data.load_digits()
    noisy = x + 0.2 * torch.randn(x.shape, generator=gen(7))
    assert judge.class_accuracy(noisy, y) >= 0.97
    assert judge.class_accuracy(x, y[torch.randperm(len(y), generator=gen(8))]) < 0.2


def test_fd_floor_and_sensitivity(judge):
    """The real-vs-real floor is FD(half A, half B); images degraded by noise, a blur or a missing class
    are far above it, and FD grows with the noise level."""
    (xa, ya), (xb, _) = data.digits_halves()
    floor = judge.real_floor()
    assert floor == judge.fd(xa, xb)
    assert 0 < floor < 2.0
    fd = lambda imgs: judge.fd(imgs, xb)  # noqa: E731
    noise = torch.randn(xa.shape, generator=gen(9))
    levels = [fd(xa + s * noise) for s in (0.2, 0.4, 0.8)]
    assert levels[0] < levels[1] < levels[2] and levels[1] > 3 * floor
    blurred = torch.nn.functional.avg_pool2d(xa, 3, stride=1, padding=1, count_include_pad=False)
    assert fd(blurred) > 20 * floor
    assert fd(xa[ya != 3]) > 3 * floor  # one class missing (mode dropping)
    report = judge.fd_with_floor(xa)
    assert report.value == floor and report.floor == floor


def test_features_are_penultimate_and_differentiable(judge):
    x, _ = data.load_digits()
    x = x[:16].clone().requires_grad_(True)
    f = judge.features(x)
    assert f.shape == (16, metrics.FEATURE_DIM)
    torch.testing.assert_close(judge.model.head(f), judge.model(x))
    (grad,) = torch.autograd.grad(f.square().sum(), x)
    assert grad.abs().sum() > 0
    assert all(not p.requires_grad for p in judge.model.parameters())


def test_judge_rejects_bad_images(judge):
    with pytest.raises(ValueError, match=r"x_gen must have shape \(B, 1, 8, 8\)"):
        judge.fd(torch.zeros(10, 64), torch.zeros(10, 1, 8, 8))
    with pytest.raises(ValueError, match="x_ref contains NaN"):
        judge.fd(torch.zeros(10, 1, 8, 8), torch.full((10, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="labels must be an int64"):
        judge.class_accuracy(torch.zeros(4, 1, 8, 8), torch.zeros(4))


def test_loading_corrupt_or_foreign_files_raises(tmp_path, judge):
    good = metrics.default_classifier_path().read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        metrics.DigitsJudge.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        metrics.DigitsJudge.load(garbage)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(ValueError, match="not a flowcore digits classifier"):
        metrics.DigitsJudge.load(foreign)
    wrong_shapes = tmp_path / "wrong.safetensors"
    state = {k: v.clone() for k, v in judge.model.state_dict().items()}
    state["head.weight"] = torch.zeros(5, metrics.FEATURE_DIM)
    del state["head.bias"]
    safetensors.torch.save_file(state, str(wrong_shapes), metadata=judge.metadata)
    with pytest.raises(ValueError, match=r"missing \['head.bias'\].*wrong shapes \['head.weight'\]"):
        metrics.DigitsJudge.load(wrong_shapes)
    with pytest.raises(FileNotFoundError):
        metrics.DigitsJudge.load(tmp_path / "missing.safetensors")
