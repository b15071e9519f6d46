"""What every recipe shares and no primitive needs: the embedded data sources, the default models,
the common command-line flags, evaluation at several NFE with the data-vs-data floor, and the
output files (config.json, metrics.json, sample grids per NFE, loss curve).

A researcher lifting a primitive into their own trainer never needs this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib.util
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from flowcore import data, metrics, sampling, times, train
from flowcore.nn import DiT, DiTConfig, MLP, MLPConfig, TimeInputs
from flowcore.nn.dit import Conditioning

DIGITS = "digits"
DATA_CHOICES = [DIGITS] + [toy.value for toy in data.Toy2D]


class ModelKind(enum.Enum):
    MLP = "mlp"
    DIT = "dit"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Source:
    """A training distribution: digits (class-conditional, (1, 8, 8)) or a 2D toy (unconditional)."""

    name: str
    shape: tuple[int, ...]
    num_classes: int
    images: Tensor | None = None
    labels: Tensor | None = None

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def batch(self, n: int) -> tuple[Tensor, Tensor | None]:
        """n training examples drawn with the global torch RNG (so a resumed run draws the same)."""
        if self.images is None:
            return data.Toy2D(self.name).sample(n), None
        idx = torch.randint(self.images.shape[0], (n,))
        return self.images[idx], self.labels[idx]


def load_source(name: str) -> Source:
    if name == DIGITS:
        x, y = data.load_digits()
        return Source(DIGITS, (1, 8, 8), 10, x, y)
    if name not in DATA_CHOICES:
        raise ValueError(f"unknown data {name!r}; choose one of {DATA_CHOICES}")
    return Source(name, (2,), 0)


def source_without_data(name: str) -> Source:
    """The shape and number of classes of --data without loading any example, for data-free recipes
    (FreeFlow): nothing in flowcore.data is read. Only evaluation (``evaluate``) touches the data."""
    if name == DIGITS:
        return Source(DIGITS, (1, 8, 8), 10)
    if name not in DATA_CHOICES:
        raise ValueError(f"unknown data {name!r}; choose one of {DATA_CHOICES}")
    return Source(name, (2,), 0)


def build_model(
    kind: ModelKind,
    source: Source,
    *,
    width: int,
    depth: int,
    n_scalar_conds: int = 0,
    time_inputs: TimeInputs = TimeInputs.T_GAP,
    aux_head: bool = False,
    aux_head_depth: int = 0,
    conditioning: Conditioning = Conditioning.ADALN_ZERO,
    decoupled_blocks: int = 0,
    fourier_features: int = 0,
    fourier_scale: float = 1.0,
    conds_in_input: bool = False,
) -> nn.Module:
    """The recipes' default networks: a residual MLP on flattened data (optionally on random Fourier
    features of it, optionally with the scalar conditions beside it), or a small DiT for images."""
    if kind is ModelKind.DIT:
        if source.name != DIGITS:
            raise ValueError("the DiT needs image data: use --data digits or --model mlp")
        if fourier_features or conds_in_input:
            raise ValueError("Fourier input features and conditions in the input are MLP options: use --model mlp")
        return DiT(DiTConfig(width=width, depth=depth, num_classes=source.num_classes, n_scalar_conds=n_scalar_conds,
                             time_inputs=time_inputs, conditioning=conditioning, aux_head=aux_head, aux_head_depth=aux_head_depth,
                             decoupled_blocks=decoupled_blocks))
    dim = 1
    for d in source.shape:
        dim *= d
    return MLP(MLPConfig(dim=dim, width=width, depth=depth, num_classes=source.num_classes, n_scalar_conds=n_scalar_conds,
                         time_inputs=time_inputs, aux_head=aux_head, aux_head_depth=aux_head_depth, decoupled_blocks=decoupled_blocks,
                         fourier_features=fourier_features, fourier_scale=fourier_scale, conds_in_input=conds_in_input))


DEFAULT_WIDTH = {DIGITS: 512}
"""MLP width per data when --width is not given (2D toys: 256)."""


def add_common_args(parser: argparse.ArgumentParser, *, data: str, steps: int, batch: int, lr: float, depth: int, out: str) -> None:
    g = parser.add_argument_group("common")
    g.add_argument("--data", choices=DATA_CHOICES, default=data, help="training data (default: %(default)s)")
    g.add_argument("--model", type=ModelKind, choices=list(ModelKind), default=ModelKind.MLP, help="network (default: %(default)s)")
    g.add_argument("--width", type=int, default=None, help="model width (default: 512 on digits, 256 on 2D; 128 for the DiT)")
    g.add_argument("--depth", type=int, default=depth, help="residual blocks / transformer blocks (default: %(default)s)")
    g.add_argument("--fourier-features", type=int, default=0, help="MLP: random Fourier features of the input, 0 = the raw input (default: %(default)s)")
    g.add_argument("--fourier-scale", type=float, default=1.0, help="MLP: standard deviation of their frequencies (default: %(default)s)")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps (default: %(default)s)")
    g.add_argument("--batch", type=int, default=batch, help="global batch size, split over ranks (default: %(default)s)")
    g.add_argument("--lr", type=float, default=lr, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--lr-decay", type=float, default=0.0, help="fraction of the run, at its end, over which the learning rate falls linearly to 0 (default: %(default)s)")
    g.add_argument("--grad-clip", type=float, default=0.0, help="clip the global gradient norm to this; 0 = off (default: %(default)s)")
    g.add_argument("--ema", type=float, default=0.999, help="EMA decay of the evaluated weights (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, default=Path(out), help="output folder (default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    g.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint period in steps (default: %(default)s)")
    g.add_argument("--eval-samples", type=int, default=None, help="samples per evaluation (default: 5000 for 2D, half the digits)")
    g.add_argument("--smoke", action="store_true", help="a few steps and a tiny evaluation, for tests")


def add_meanflow_loss_args(parser: argparse.ArgumentParser) -> None:
    """The MeanFlow family's loss flags (Geng et al. 2025, arXiv 2505.13447): adaptive weight
    w = 1 / (sg(L) + c)^p and training-time CFG (omega, kappa, label dropout and its rows), shared by meanflow.py,
    alphaflow.py and uaimf.py so their comparison runs use the same values."""
    g = parser.add_argument_group("meanflow loss")
    g.add_argument("--p", type=float, default=1.0, help="adaptive-weight power (default: %(default)s)")
    g.add_argument("--c", type=float, default=1e-2, help="adaptive-weight constant, on a sum over dims (default: %(default)s)")
    g.add_argument("--omega", type=float, default=1.5, help="training-time CFG omega, digits (default: %(default)s)")
    g.add_argument("--kappa", type=float, default=0.5, help="training-time CFG kappa, digits (default: %(default)s)")
    g.add_argument("--label-drop", type=float, default=0.1, help="label dropout, digits (default: %(default)s)")
    add_drop_on_equal_arg(g)


def add_drop_on_equal_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--drop-on-equal: label dropout on s = t rows only (``guidance.drop_labels(among=...)``), as the official MeanFlow and iMF code."""
    parser.add_argument("--drop-on-equal", action=argparse.BooleanOptionalAction, default=False,
                        help="drop labels on s = t rows only, as the official MeanFlow and iMF code (its dropped rows are its first rows, "
                             "which are its s = t rows) (default: %(default)s)")


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    """Apply --smoke (a few steps, small model and evaluation) and check the common flags."""
    if args.width is None:
        args.width = 128 if args.model is ModelKind.DIT else DEFAULT_WIDTH.get(args.data, 256)
    if args.smoke:
        args.steps, args.width, args.depth = min(args.steps, 6), min(args.width, 32), min(args.depth, 2)
        args.eval_samples, args.ckpt_every = 64, 3
    for name in ("steps", "batch", "width", "depth"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.grad_clip >= 0:
        raise SystemExit(f"--grad-clip must be >= 0 (0 = off), got {args.grad_clip}")
    if not 0 <= args.ema < 1:
        raise SystemExit(f"--ema must be in [0, 1), got {args.ema}")
    if args.fourier_features < 0 or not args.fourier_scale > 0:
        raise SystemExit(f"--fourier-features must be >= 0 and --fourier-scale > 0, got {args.fourier_features} and {args.fourier_scale}")
    if args.fourier_features and args.model is not ModelKind.MLP:
        raise SystemExit("--fourier-features is an MLP option: use --model mlp or drop it")
    if not 0 <= args.lr_decay <= 1:
        raise SystemExit(f"--lr-decay must be in [0, 1], got {args.lr_decay}")
    for name in FRACTION_FLAGS:
        if hasattr(args, name) and not 0 <= getattr(args, name) <= 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if hasattr(args, "t_floor") and not 0 < args.t_floor <= 1:
        raise SystemExit(f"--t-floor must be in (0, 1], got {args.t_floor}")
    if hasattr(args, "aux_head_depth"):
        if args.aux_head_depth is None:  # every block the v-head's own
            args.aux_head_depth = args.depth
        if args.smoke:  # --smoke caps --depth at 2
            args.aux_head_depth = min(args.aux_head_depth, args.depth)
        if not 0 <= args.aux_head_depth <= args.depth:
            raise SystemExit(f"--aux-head-depth must be in [0, --depth={args.depth}], got {args.aux_head_depth}")
    return args


def add_aux_head_depth_arg(parser: argparse.ArgumentParser, every_block: bool = False) -> None:
    """--aux-head-depth, for recipes with a v-head (iMF, pMF), by default 0 or (``every_block``) all --depth blocks;
    ``finalize_args`` resolves and checks it against --depth."""
    parser.add_argument("--aux-head-depth", type=int, default=None if every_block else 0,
                        help="last blocks the v-head runs as its own copies, after the blocks it shares with the u-head; "
                             f"iMF's MiT-B/2: 8 of 12 (default: {'all --depth blocks' if every_block else 0})")


FRACTION_FLAGS = ("equal_fraction", "uniform_fraction", "fm_fraction", "dtd_fraction")
"""Recipe flags that are fractions of a batch or a run; ``finalize_args`` checks each a recipe has."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every recipe builds first: the process group, the data, the model (``net`` is what the
    loss calls, with gradients averaged across ranks) and its EMA."""

    dist: train.Dist
    source: Source
    model: nn.Module
    net: nn.Module
    ema: train.EMA


def network_args(args: argparse.Namespace) -> dict:
    """``build_model``'s keyword arguments from the common flags (--width, --depth, --fourier-features/-scale)."""
    return {"width": args.width, "depth": args.depth, "fourier_features": args.fourier_features, "fourier_scale": args.fourier_scale}


def setup(args: argparse.Namespace, **model_options) -> Setup:
    """Initialise torchrun (if any), seed every RNG per rank, load --data and build --model."""
    dist = train.init_distributed()
    train.seed_everything(args.seed, dist.rank)
    source = load_source(args.data)
    model = build_model(args.model, source, **network_args(args), **model_options)
    return Setup(dist, source, model, train.prepare_model(model, dist), train.EMA(model, (args.ema,)))


def setup_distillation(args: argparse.Namespace, *, init_from_teacher: bool, source: Source | None = None) -> tuple[Setup, nn.Module]:
    """``setup`` for a recipe that distils the FM teacher of ``args.teacher`` (see ``load_teacher``):
    returns the run and the frozen teacher. With ``init_from_teacher`` the student is the teacher's
    network with its weights (``--model``, ``--width`` and ``--depth`` must match it), else a fresh
    ``--model``. ``source``: the data source (default: load ``--data``; pass ``source_without_data``
    for a data-free recipe)."""
    dist = train.init_distributed()
    train.seed_everything(args.seed, dist.rank)
    source = source or load_source(args.data)
    if init_from_teacher:  # building a network draws from the RNG: each branch keeps the order its recipes' runs used
        teacher = load_teacher(args.teacher, source, dist, smoke=args.smoke)
        model = build_model(args.model, source, **network_args(args))
        if model.config != teacher.config:
            raise SystemExit(f"the student starts from the teacher, whose network ({teacher.config}) differs from this one "
                             f"({model.config}): pass the teacher's --model, --width, --depth and --fourier-features/--fourier-scale")
        model.load_state_dict(teacher.state_dict())
    else:
        model = build_model(args.model, source, **network_args(args))
        teacher = load_teacher(args.teacher, source, dist, smoke=args.smoke)
    return Setup(dist, source, model, train.prepare_model(model, dist), train.EMA(model, (args.ema,))), teacher


def run_training(args: argparse.Namespace, run: Setup, loss_fn: Callable[[int], tuple[Tensor, dict[str, float]]],
                 optimizer: torch.optim.Optimizer, desc: str, extra_modules: Mapping[str, nn.Module] = {},
                 eval_flags: tuple[str, ...] = ()) -> tuple[dict[str, list[float]], float]:
    """``train.train_loop`` with the common flags (--grad-clip 0: no clipping); returns (loss history, training seconds).
    ``extra_modules``: further trained modules by role name (e.g. a learned loss weight), checkpointed and resumed.
    ``eval_flags``: the recipe's flags that only change its evaluation (with --eval-samples), so that
    ``--resume`` of a finished run with other values re-evaluates the same weights."""
    start = time.perf_counter()
    history = train.train_loop(loss_fn=loss_fn, model=run.model, optimizer=optimizer, steps=args.steps, out=args.out,
                               config=config_of(args), dist=run.dist, ema=run.ema, extra_modules=extra_modules, resume=args.resume,
                               ckpt_every=args.ckpt_every, grad_clip=args.grad_clip or None, lr_schedule=linear_decay_tail(args.steps, args.lr_decay), desc=desc,
                               resume_may_differ=train.RESUME_MAY_DIFFER + ("eval_samples", *eval_flags))
    return history, round(time.perf_counter() - start, 1)


def linear_decay_tail(steps: int, fraction: float) -> Callable[[int], float] | None:
    """Learning-rate factor: 1 until the last ``fraction`` of ``steps``, then linearly down to 0,
    lr(step) = lr0 min(1, (steps - step) / (fraction steps)) (a warmup-stable-decay schedule without
    warm-up). None (constant) when fraction is 0."""
    if fraction == 0:
        return None
    span = fraction * steps
    return lambda step: min(1.0, (steps - step) / span)


ROOT = Path(__file__).resolve().parents[1]
_TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_", "MASTER_", "TORCHELASTIC")


def _train_default_teacher(data_name: str, out: Path, smoke: bool) -> None:
    """Run ``recipes/fm.py --data data_name --out out`` in a single plain process."""
    script = ROOT / "recipes" / "fm.py"
    if not script.is_file():
        raise FileNotFoundError(f"no teacher checkpoint given and no {script} to train one: pass the teacher checkpoint by flag")
    cmd = [sys.executable, str(script), "--data", data_name, "--out", str(out)] + (["--smoke"] if smoke else [])
    print(f"no teacher checkpoint in {out}: training it first with {' '.join(cmd[1:])}", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_TORCHRUN_ENV)}
    subprocess.run(cmd, check=True, env=env)


def load_recipe(name: str) -> types.ModuleType:
    """The module of ``recipes/<name>.py`` (recipes are standalone scripts, not a package), for tools that
    reuse a recipe's ``parse``, ``generators`` or ``model_options``."""
    path = ROOT / "recipes" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no recipe {name!r}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"flowcore_recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_teacher_dir(data_name: str) -> Path:
    """Where the FM teacher recipe's default run for ``data_name`` lives: runs/fm (digits) or runs/fm_<toy>."""
    return ROOT / "runs" / ("fm" if data_name == DIGITS else f"fm_{data_name}")


def load_teacher(checkpoint: Path | None, source: Source, dist: train.Dist, *, smoke: bool = False) -> nn.Module:
    """The frozen FM teacher v(z, t, t, y) of a distillation recipe, in eval mode, EMA weights.

    ``checkpoint`` is a ``recipes/fm.py`` checkpoint; when None, the FM recipe's default run for this
    data is used, and trained first (``python recipes/fm.py --data ...``, cached in its --out) if it
    does not exist yet (with ``smoke``: a smoke-sized teacher, cached beside it with the suffix ``_smoke``). The network is
    rebuilt from the checkpoint's own config, so a teacher of any width or depth loads. Under
    torchrun only rank 0 trains a missing teacher; the others wait for it.
    """
    if checkpoint is None:
        out = default_teacher_dir(source.name)
        if smoke:
            out = out.with_name(out.name + "_smoke")
        checkpoint = out / train.CHECKPOINT_NAME
        if dist.is_main and not checkpoint.is_file():
            _train_default_teacher(source.name, out, smoke)
        if dist.world_size > 1:
            torch.distributed.barrier()
    config = train.checkpoint_info(checkpoint).config
    if config.get("data") != source.name:
        raise ValueError(f"teacher {checkpoint} was trained on {config.get('data')!r}, not on {source.name!r}")
    teacher = build_model(ModelKind(config["model"]), source, width=config["width"], depth=config["depth"],
                          fourier_features=config.get("fourier_features", 0), fourier_scale=config.get("fourier_scale", 1.0))
    train.load_weights(checkpoint, {train.ema_name(config["ema"]): teacher})
    return teacher.eval().requires_grad_(False)


def config_of(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, (Path, enum.Enum)) else v) for k, v in vars(args).items()}


Generator = Callable[[Tensor, Tensor | None], Tensor]


def flow_map_generators(model: Callable[..., Tensor], nfes: tuple[int, ...] = (1, 2, 4), prefix: str = "") -> dict[str, Generator]:
    """``{prefix}{k}nfe``: k uniform flow-map jumps z_s = u(z_t, t, s, y) from t = 1 to 0, one generator per k."""
    return {f"{prefix}{k}nfe": (lambda eps, y, k=k: sampling.flow_map_sample(lambda z, t, s: model(z, t, s, y), eps, times.uniform_grid(k)))
            for k in nfes}


def diagonal_velocity_generator(model: Callable[..., Tensor], steps: int = 100) -> dict[str, Generator]:
    """``velocity_euler{steps}``: Euler on the flow map's diagonal v(z, t) = u(z, t, t, y) from t = 1 to 0,
    a check of whether the s = t rows learned the marginal velocity (then it matches the FM teacher's
    Euler samples), separately from the jumps."""
    field = lambda y: sampling.velocity_of(lambda z, t, s: model(z, t, s, y))  # noqa: E731
    return {f"velocity_euler{steps}": lambda eps, y: sampling.euler(field(y), eps, times.uniform_grid(steps))}


def digits_eval_sets(n: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """(half A: the reference, labels of half B: what to generate, half B: the floor's sample)."""
    (xa, _), (xb, yb) = data.digits_halves()
    m = min(n or xb.shape[0], xb.shape[0], xa.shape[0])
    return xa[:m], yb[:m], xb[:m]


def _score_2d(source: Source, x: Tensor, seed: int) -> dict[str, float]:
    toy = data.Toy2D(source.name)
    sw2 = metrics.metric_with_floor(metrics.sliced_w2, x, toy.sample, seed=seed)
    energy = metrics.metric_with_floor(metrics.energy_distance, x, toy.sample, seed=seed)
    return {"sw2": sw2.value, "energy": energy.value, "sw2_floor": sw2.floor, "energy_floor": energy.floor}


@torch.no_grad()
def evaluate(source: Source, generators: Mapping[str, Generator], *, n: int | None = None, seed: int = 0) -> tuple[dict, dict[str, Tensor]]:
    """Run each generator from the same noise and score it beside the data-vs-data floor.

    2D: sliced W2 and energy distance of n points (default 5000) against n fresh data points; the
    floor is the same metric between independent data draws, averaged over 5 draws
    (``metrics.metric_with_floor``). Digits: Frechet distance in the shipped classifier's features
    against half A of the data and the class accuracy of samples generated for the labels of half
    B; the floor compares half B with half A (same sample sizes, same small-sample bias).
    Returns (metrics by generator name plus "floor", samples by generator name).
    """
    digits = source.name == DIGITS
    if digits:
        judge = metrics.DigitsJudge.load()
        ref, labels, other = digits_eval_sets(n)
        shape = other.shape
        results: dict = {"floor": {"fd": judge.fd(other, ref), "class_acc": judge.class_accuracy(other, labels)}}
    else:
        labels, shape, results = None, (n or metrics.DEFAULT_2D_SAMPLES, *source.shape), {}
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 777))
    samples: dict[str, Tensor] = {}
    for name, generate in generators.items():
        start = time.perf_counter()
        x = generate(noise, labels).float()
        seconds = round(time.perf_counter() - start, 3)
        if not torch.isfinite(x).all():
            results[name] = {"finite": False}
            continue
        samples[name] = x
        if digits:
            results[name] = {"fd": judge.fd(x.clamp(-1, 1), ref), "class_acc": judge.class_accuracy(x.clamp(-1, 1), labels)}
        else:
            scores = _score_2d(source, x, seed)
            results["floor"] = {"sw2": scores.pop("sw2_floor"), "energy": scores.pop("energy_floor")}
            results[name] = scores
        results[name]["sample_seconds"] = seconds
    return results, samples


def write_outputs(out: Path, args: argparse.Namespace, source: Source, results: Mapping, samples: Mapping[str, Tensor],
                  history: Mapping[str, list[float]], extra: Mapping | None = None) -> None:
    """config.json, metrics.json, one sample picture per generator, the loss curve, and a printed table."""
    out.mkdir(parents=True, exist_ok=True)
    train.write_json(out / "config.json", config_of(args))
    for name, x in samples.items():
        if source.name == DIGITS:
            train.save_image_grid(x[:100].clamp(-1, 1), out / f"samples_{name}.png", nrow=10)
        else:
            train.save_scatter(x, out / f"samples_{name}.png", title=f"{source.name} {name}")
    if history:
        train.save_loss_curve(history, out / "loss.png")
    payload = {"data": source.name, **(extra or {}), "results": dict(results)}
    train.write_json(out / "metrics.json", payload)
    train.print_table({name: row for name, row in results.items()})


def run_script(main: Callable[[], object]) -> None:
    """A recipe's ``__main__`` entry: run ``main()``; under torchrun, flush and leave with
    ``os._exit(0)``. On torch 2.13 CPU, a worker that has already destroyed its gloo group still
    aborted in C++ static destructors at interpreter exit in about 1 of 3 runs ("terminate called
    without an active exception", after all work and outputs were done), which torchrun reports as a
    failed run."""
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
