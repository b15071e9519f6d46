"""Oracles for flowcore.nn: exact JVP vs fp64 central differences, zero init, conditioning paths,
patchify layout, and the attention math fallback under torch.func.jvp."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from flowcore.attention import AttentionBackend, attention_backend
from flowcore.nn import MLP, Conditioning, DiT, DiTConfig, MLPConfig, TimeInputs, patchify, sinusoidal_features, unpatchify
from flowcore.nn.conditioning import MAX_PERIOD, TIME_SCALE

B = 4
NUM_CLASSES = 10


def small_mlp(**kw) -> MLP:
    return MLP(MLPConfig(**{"dim": 64, "width": 48, "depth": 2, "cond_width": 32, **kw}))


def small_dit(**kw) -> DiT:
    return DiT(DiTConfig(**{"width": 32, "depth": 2, "heads": 2, **kw}))


def perturb(model: torch.nn.Module, std: float = 0.05, seed: int = 1) -> torch.nn.Module:
    """Add noise to every parameter so the zero-initialised layers stop hiding the computation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def inputs(model: torch.nn.Module, dtype=torch.float64, seed: int = 0):
    """(z, t, s, y, c) valid for ``model``; s <= t, times away from the ends."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    z = torch.randn(B, 1, 8, 8, generator=g, dtype=dtype)
    t = 0.2 + 0.6 * torch.rand(B, generator=g, dtype=dtype)
    s = t * torch.rand(B, generator=g, dtype=dtype)
    y = torch.tensor([0, 3, 9, NUM_CLASSES]) if cfg.num_classes else None
    c = torch.rand(B, cfg.n_scalar_conds, generator=g, dtype=dtype) if cfg.n_scalar_conds else None
    return z, t, s, y, c


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def assert_jvp_matches_central_difference(model: torch.nn.Module, h: float = 1e-7, rtol: float = 1e-7) -> None:
    """d/dh F(z + h dz, t + h dt, s + h ds, y, c + h dc) at h = 0: torch.func.jvp vs
    [F(+h) - F(-h)] / 2h in fp64 (truncation error ~h^2: about 1e-8 relative at h = 1e-7)."""
    model = perturb(model.double())
    z, t, s, y, c = inputs(model)
    primals = (z, t, s) if c is None else (z, t, s, c)
    g = torch.Generator().manual_seed(2)
    tangents = tuple(torch.randn(p.shape, generator=g, dtype=p.dtype) for p in primals)

    def f(z, t, s, c=None):
        return model(z, t, s, y, c)

    _, jvp_out = torch.func.jvp(f, primals, tangents)
    plus = f(*(p + h * d for p, d in zip(primals, tangents)))
    minus = f(*(p - h * d for p, d in zip(primals, tangents)))
    for exact, fp, fm in zip(as_tuple(jvp_out), as_tuple(plus), as_tuple(minus)):
        assert exact.norm() > 1.0  # a trivially zero derivative would pass the comparison
        fd = (fp - fm) / (2 * h)
        assert (fd - exact).norm() / exact.norm() < rtol


def test_sinusoidal_features_closed_form():
    x = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    phi = sinusoidal_features(x, 8)
    omega = TIME_SCALE * MAX_PERIOD ** (-torch.arange(4, dtype=torch.float64) / 4)
    assert torch.allclose(phi, torch.cat([torch.cos(x[:, None] * omega), torch.sin(x[:, None] * omega)], dim=1), rtol=0, atol=1e-12)
    assert phi[0, :4].eq(1).all() and phi[0, 4:].eq(0).all()


AUX_HEADS = [{"aux_head": False}, {"aux_head": True}, {"aux_head": True, "aux_head_depth": 1}]


@pytest.mark.parametrize("aux", AUX_HEADS)
@pytest.mark.parametrize("time_inputs", list(TimeInputs))
def test_mlp_jvp_equals_central_difference(time_inputs, aux):
    torch.manual_seed(0)
    assert_jvp_matches_central_difference(small_mlp(num_classes=NUM_CLASSES, n_scalar_conds=2, time_inputs=time_inputs, **aux))


def test_mlp_on_fourier_features_closed_form_and_exact_jvp():
    """gamma(z) = [z, sin(2 pi z B), cos(2 pi z B)] with B the saved buffer; the MLP's JVP through it
    equals the fp64 central difference; without the option the network has no such buffer."""
    torch.manual_seed(0)
    model = small_mlp(num_classes=NUM_CLASSES, fourier_features=16, fourier_scale=2.0)
    B_ = model.features.frequencies
    assert B_.shape == (64, 16) and "features.frequencies" in model.state_dict()
    assert 1.5 < B_.std().item() < 2.5  # N(0, scale^2)
    z = torch.randn(5, 64)
    torch.testing.assert_close(model.features(z), torch.cat([z, torch.sin(2 * torch.pi * z @ B_), torch.cos(2 * torch.pi * z @ B_)], dim=1))
    assert model.input.in_features == 64 + 32
    assert_jvp_matches_central_difference(model)
    assert small_mlp().features is None and not any("frequencies" in k for k in small_mlp().state_dict())
    with pytest.raises(ValueError, match="fourier_scale"):
        MLPConfig(dim=2, fourier_features=4, fourier_scale=0.0)
    with pytest.raises(ValueError, match="fourier_features"):
        MLPConfig(dim=2, fourier_features=-1)


def test_mlp_with_conditions_in_its_input_layer():
    """conds_in_input: the input layer reads [z, c], so with every adaLN modulation and the condition
    embeddings cut off (zeroed) the output still moves with c, and equals the closed form of that path;
    the exact JVP (also along c) matches central differences; the option needs conditions."""
    torch.manual_seed(0)
    model = perturb(small_mlp(n_scalar_conds=3, conds_in_input=True).double())
    assert model.input.in_features == 64 + 3
    assert_jvp_matches_central_difference(small_mlp(n_scalar_conds=3, conds_in_input=True))
    with torch.no_grad():
        for block in model.blocks:
            block.modulation.weight.zero_()
            block.modulation.bias.zero_()
        for p_ in model.embed.parameters():
            p_.zero_()
    z, t, c = torch.randn(B, 64, dtype=torch.float64), torch.rand(B, dtype=torch.float64), torch.randn(B, 3, dtype=torch.float64)
    out, out_shifted = model(z, t, t, None, c), model(z, t, t, None, c + 1.0)
    assert (out - out_shifted).norm() > 1e-3 * out.norm()
    cond = torch.zeros(B, model.config.cond_width, dtype=torch.float64)  # SiLU of the zeroed embeddings
    h = model.input(torch.cat([z, c], dim=1))  # blocks with zero modulation are the identity
    torch.testing.assert_close(out, model.head(h, cond))
    with pytest.raises(ValueError, match="conds_in_input"):
        MLPConfig(dim=2, conds_in_input=True)


@pytest.mark.parametrize("aux", AUX_HEADS)
@pytest.mark.parametrize("conditioning", list(Conditioning))
def test_dit_jvp_equals_central_difference_with_auto_attention(conditioning, aux):
    """AUTO backend on CPU: stock SDPA has no forward AD (see the next test); the model must switch
    to the math kernel inside torch.func.jvp and give the exact derivative."""
    torch.manual_seed(0)
    model = small_dit(num_classes=NUM_CLASSES, n_scalar_conds=2, conditioning=conditioning, n_register_tokens=2, **aux)
    with attention_backend(AttentionBackend.AUTO):
        assert_jvp_matches_central_difference(model)


def test_stock_sdpa_has_no_forward_ad_on_cpu():
    """Why the DiT JVP test above is not vacuous: direct SDPA under torch.func.jvp raises here."""
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(NotImplementedError, match="forward AD"):
        torch.func.jvp(lambda q: F.scaled_dot_product_attention(q, q, q), (q,), (q,))


MODELS = {
    "mlp": small_mlp,
    "dit_adaln": small_dit,
    "dit_in_context": lambda **kw: small_dit(conditioning=Conditioning.IN_CONTEXT, n_register_tokens=1, **kw),
}


@pytest.mark.parametrize("name", MODELS)
def test_zero_at_init_and_nonzero_after_one_step(name):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=NUM_CLASSES, aux_head=True)
    z, t, s, y, c = inputs(model, dtype=torch.float32)
    out, aux = model(z, t, s, y, c)
    assert out.shape == z.shape and aux.shape == z.shape
    assert out.eq(0).all() and aux.eq(0).all()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out, aux = model(z, t, s, y, c)
    ((out - z).square().mean() + (aux + z).square().mean()).backward()
    opt.step()
    out, aux = model(z, t, s, y, c)
    assert out.abs().min() > 0 and aux.abs().min() > 0
    assert not torch.allclose(out, aux)


@pytest.mark.parametrize("aux_head_depth", [0, 1, 2])
@pytest.mark.parametrize("name", MODELS)
def test_aux_head_runs_its_own_copies_of_the_last_blocks(name, aux_head_depth):
    """The aux output (iMF's v-head, with its own copies of the last k of 2 blocks) equals the main output of the same
    network with its last k blocks and its output layer swapped for the aux head's (k = 0: the output layer alone), and
    the main output does not see the aux blocks."""
    torch.manual_seed(0)
    model = perturb(MODELS[name](num_classes=NUM_CLASSES, n_scalar_conds=2, aux_head=True, aux_head_depth=aux_head_depth).double())
    args = inputs(model)
    out, aux = model(*args)
    assert len(model.aux_blocks) == aux_head_depth
    swapped = copy.deepcopy(model)
    swapped.head = swapped.aux
    for j, block in enumerate(swapped.aux_blocks):
        swapped.blocks[2 - aux_head_depth + j] = block
    torch.testing.assert_close(swapped(*args)[0], aux, rtol=0, atol=1e-12)
    assert (out - aux).norm() > 1e-2 * out.norm()
    if aux_head_depth:
        perturb(model.aux_blocks, std=0.5, seed=3)
        out_after, aux_after = model(*args)
        torch.testing.assert_close(out_after, out, rtol=0, atol=0)
        assert (aux_after - aux).norm() > 1e-2 * aux.norm()


@pytest.mark.parametrize("config", [MLPConfig, DiTConfig])
def test_aux_head_depth_is_checked(config):
    base = {"dim": 64} if config is MLPConfig else {}
    with pytest.raises(ValueError, match="aux_head_depth must be in"):
        config(**base, depth=2, aux_head=True, aux_head_depth=3)
    with pytest.raises(ValueError, match="needs aux_head=True"):
        config(**base, depth=2, aux_head_depth=1)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("time_inputs", list(TimeInputs))
def test_time_derivatives_flow(name, time_inputs):
    """d/dt and d/ds are nonzero once the weights move; with GAP the model sees only t - s, so
    d/dt F = -d/ds F exactly (a shift of both times changes nothing)."""
    model = perturb(MODELS[name](time_inputs=time_inputs))
    z, t, s, _, _ = inputs(model, dtype=torch.float32)
    one = torch.ones_like(t)
    _, dt = torch.func.jvp(lambda t: model(z, t, s), (t,), (one,))
    _, ds = torch.func.jvp(lambda s: model(z, t, s), (s,), (one,))
    assert dt.abs().mean() > 1e-2 and ds.abs().mean() > 1e-2
    _, shift = torch.func.jvp(lambda t, s: model(z, t, s), (t, s), (one, one))
    if time_inputs is TimeInputs.GAP:
        assert shift.abs().max() < 1e-5 * dt.abs().max()
    else:
        assert shift.abs().mean() > 1e-2


def test_gradient_flows_through_the_time_derivative():
    """A loss on dF/dt (as TVM-style objectives use) reaches the time-embedding weights."""
    model = perturb(small_dit())
    z, t, s, _, _ = inputs(model, dtype=torch.float32)
    _, dt = torch.func.jvp(lambda t: model(z, t, s), (t,), (torch.ones_like(t),))
    dt.square().mean().backward()
    assert model.embed.times[0].fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_class_labels_and_null_class(name):
    model = perturb(MODELS[name](num_classes=NUM_CLASSES))
    z, t, s, _, _ = inputs(model, dtype=torch.float32)
    z, t, s = z[:1].expand(3, -1, -1, -1), t[:1].expand(3), s[:1].expand(3)
    out = model(z, t, s, torch.tensor([0, 1, NUM_CLASSES]))
    assert torch.isfinite(out).all()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (out[i] - out[j]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"\by\b.*required"):
        model(z, t, s)
    with pytest.raises(ValueError, match=r"\by\b"):
        model(z, t, s, torch.tensor([0, 1, NUM_CLASSES + 1]))
    with pytest.raises(TypeError, match=r"\by\b"):
        model(z, t, s, torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("name", MODELS)
def test_bad_calls_raise_naming_the_argument(name):
    model = MODELS[name]()
    z, t, s, _, _ = inputs(model, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\by\b.*unconditional"):
        model(z, t, s, torch.zeros(B, dtype=torch.int64))
    bad_zs = [z[..., :7], torch.zeros(B, 1, 8, 9), z.reshape(-1)]
    if name != "mlp":  # the MLP takes any (B, ...) with 64 values per sample
        bad_zs += [z.reshape(B, 8, 8), z.reshape(B, 64), z.expand(B, 3, 8, 8)]
    for bad_z in bad_zs:
        with pytest.raises(ValueError, match=r"\bz\b"):
            model(bad_z, t, s)
    with pytest.raises(ValueError, match=r"\bt\b"):
        model(z, t[:, None], s)
    with pytest.raises(ValueError, match=r"\bs\b"):
        model(z, t, s[:2])
    with pytest.raises(TypeError, match=r"\bt\b"):
        model(z, torch.zeros(B, dtype=torch.int64), s)
    with pytest.raises(ValueError, match=r"\bc\b"):
        model(z, t, s, c=torch.zeros(B, 1))
    conditioned = MODELS[name](n_scalar_conds=2)
    with pytest.raises(ValueError, match=r"\bc\b.*required"):
        conditioned(z, t, s)
    with pytest.raises(ValueError, match=r"\bc\b"):
        conditioned(z, t, s, c=torch.zeros(B, 3))


def test_scalar_conditions_change_the_output():
    model = perturb(small_mlp(n_scalar_conds=2))
    z, t, s, _, c = inputs(model, dtype=torch.float32)
    assert (model(z, t, s, c=c) - model(z, t, s, c=c.flip(1))).abs().max() > 1e-3


def test_mlp_flattens_images_and_takes_2d_points():
    model = perturb(small_mlp())
    z, t, s, _, _ = inputs(model, dtype=torch.float32)
    assert torch.equal(model(z, t, s), model(z.reshape(B, 64), t, s).reshape(z.shape))
    toy = perturb(MLP(MLPConfig(dim=2, width=32, depth=1, cond_width=16)))
    assert toy(torch.randn(B, 2), t, s).shape == (B, 2)


def test_patchify_layout_and_round_trip():
    x = torch.randn(2, 3, 8, 12)
    p = 4
    tokens = patchify(x, p)
    assert tokens.shape == (2, (8 // p) * (12 // p), p * p * 3)
    r, q = 1, 2  # token r * (W / p) + q holds the patch at rows r*p.., columns q*p.., channel last
    expected = x[:, :, r * p : (r + 1) * p, q * p : (q + 1) * p].permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.equal(tokens[:, r * (12 // p) + q], expected)
    assert torch.equal(unpatchify(tokens, p, 3, 8, 12), x)


def test_fixed_2d_positions():
    """Token r * G + q carries [cos(r w_k), sin(r w_k), cos(q w_k), sin(q w_k)], w_k = 10000^(-k/(W/4))."""
    pos = DiT(DiTConfig(width=16, image_size=8, patch=2)).positions[0].double()
    omega = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    r, q = 2, 3
    expected = torch.cat([torch.cos(r * omega), torch.sin(r * omega), torch.cos(q * omega), torch.sin(q * omega)])
    assert torch.allclose(pos[r * 4 + q], expected, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="patch"):
        DiTConfig(image_size=8, patch=3)
    with pytest.raises(ValueError, match="heads"):
        DiTConfig(width=32, heads=3)
    with pytest.raises(TypeError, match="conditioning"):
        DiTConfig(conditioning="adaln")
    with pytest.raises(TypeError, match="time_inputs"):
        MLPConfig(dim=2, time_inputs="t_gap")
    with pytest.raises(ValueError, match="dim"):
        MLPConfig(dim=0)
    with pytest.raises(TypeError, match="config"):
        MLP(DiTConfig())


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_default_sizes():
    """Parameter counts of the default MLP(dim 64) and DiT() against the architecture written out."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    times = 2 * (linear(256, 128) + linear(128, 128))  # T_GAP: embeddings of t and t - s
    mlp_block = 2 * linear(512, 512) + linear(128, 3 * 512)
    mlp_head = linear(128, 2 * 512) + linear(512, 64)
    assert count(MLP(MLPConfig(dim=64))) == times + linear(64, 512) + 4 * mlp_block + mlp_head
    dit_block = linear(128, 3 * 128) + 2 * 32 + linear(128, 128) + linear(128, 512) + linear(512, 128) + linear(128, 6 * 128)
    dit_head = linear(128, 2 * 128) + linear(128, 4)
    assert count(DiT(DiTConfig())) == times + linear(4, 128) + 4 * dit_block + dit_head
    assert count(DiT(DiTConfig(num_classes=10))) == count(DiT(DiTConfig())) + 11 * 128
