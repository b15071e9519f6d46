"""Write the README's results section from the runs' metrics.json and the benchmarks' JSON output.

    bash scripts/reproduce.sh          # runs the defaults and the benchmarks, then this script
    python scripts/results_table.py    # only regenerate the README section from existing outputs

No number in the section is typed by hand: each comes from a file named beside it. Every source read
from runs/ or bench/out/ is archived (without its loss history) under results/, which is committed, and
read from there when a fresh checkout has no runs/. A table row or section whose source is in neither
place is carried unchanged from the section as last generated, and the section names what was carried.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNS = {
    "fm (digits)": ROOT / "runs/fm/metrics.json",
    "fm (checkerboard)": ROOT / "runs/fm_checkerboard/metrics.json",
    "meanflow (checkerboard)": ROOT / "runs/meanflow/metrics.json",
    "pmf (digits)": ROOT / "runs/pmf/metrics.json",
    # the defaults before their step counts were cut to fit 10 minutes (bench/default_wall_time.py); the comparison runs of
    # pmf, imf, tvm, dmf and scm below were made at those counts and are compared with these
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("pmf_7k", "imf_7k", "tvm_5k", "dmf_4k", "scm_6k")},
    **{f"{r} (default)": ROOT / f"runs/{r}/metrics.json" for r in (
        "rectified_flow", "imf", "alphaflow", "uaimf", "dmf", "tvm", "jit", "cm", "scm", "freeflow", "metaflow", "drifting", "repa")},
    # the studies' default-setting members are the recipes' default runs (same flags, seed and steps)
    "latent_forcing (default)": ROOT / "runs/latent_forcing_ablation/cascaded/metrics.json",
    "unified_latents (default)": ROOT / "runs/unified_latents_sweep/lambda0_5/metrics.json",
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "meanflow_digits", "tvm_no_cfg_weight", "cm_ct", "cm_ict", "scm_unstabilised", "freeflow_no_correction", "jit_v",
        "drifting_attraction1.5", "drifting_checkerboard", "drifting_checkerboard_attraction1.5", "latent_forcing_k4", "latent_forcing_k2")},
    **{f"{r} (2D)": ROOT / f"runs/{r}_checkerboard/metrics.json" for r in ("cm", "freeflow")},
    "tvm_cfg1.5 (comparison)": ROOT / "runs/tvm_cfg1.5/metrics.json",
    # tvm_5k's weights (the 5000-step default of the time) sampled at other CFG scales (a finished run re-evaluated by --resume --cfg W)
    **{f"tvm_cfg{w} (re-evaluated)": ROOT / f"runs/tvm_cfg{w}/metrics.json" for w in ("1.0", "2.0")},
    # imf_7k's weights sampled at omega 1.5, and iMF with its adaptive weight (p = 1; this run also had --lr-decay 0.3) sampled at 1.5
    "imf_w1.5 (re-evaluated)": ROOT / "runs/imf_w1.5/metrics.json",
    "imf_adaptive_lr_decay (comparison)": ROOT / "runs/imf_adaptive_lr_decay/metrics.json",
    # iMF's defaults with a decaying learning rate (--lr-decay 0.3, as pmf)
    "imf_lr_decay (comparison)": ROOT / "runs/imf_lr_decay/metrics.json",
    # iMF's defaults (5000 steps) with the adaptive weight at p = 0.5 and --lr-decay 0.3
    "imf_p0.5_lr_decay (comparison)": ROOT / "runs/imf_p0.5_lr_decay/metrics.json",
    # MeanFlow and UAIMF on digits without training-time CFG (--omega 1 --kappa 0; AlphaFlow's default); the UAIMF runs here and in
    # the next entry have p = 1 (or 0, as named) and a constant learning rate, uaimf.py's defaults until they changed
    **{f"{r}_no_cfg (comparison)": ROOT / f"runs/{r}_no_cfg/metrics.json" for r in ("meanflow_digits", "uaimf")},
    # the plain squared error (--p 0) on the single-head MeanFlow recipes, with and without training-time CFG
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("uaimf_p0", "uaimf_p0_no_cfg", "meanflow_digits_p0_no_cfg")},
    # DMF fine-tuned without model guidance (--omega 0)
    "dmf_no_guidance (comparison)": ROOT / "runs/dmf_no_guidance/metrics.json",
    # MeanFlow on the checkerboard with the adaptive weight's power lowered, and with a decaying learning rate
    **{f"{r} (2D)": ROOT / f"runs/{r}/metrics.json" for r in ("meanflow_p0", "meanflow_p0.5", "meanflow_lr_decay")},
    # MeanFlow on the checkerboard for 4000 steps: fewer s = t rows (--equal-fraction 0.25), and half or all times uniform (--uniform-fraction)
    **{f"{r} (2D)": ROOT / f"runs/{r}/metrics.json" for r in ("meanflow_4k_equal0.25", "meanflow_4k_uniform0.5", "meanflow_4k_uniform1")},
    # MeanFlow on digits without training-time CFG, with a decaying learning rate (--lr-decay 0.3)
    "meanflow_digits_no_cfg_lr_decay (comparison)": ROOT / "runs/meanflow_digits_no_cfg_lr_decay/metrics.json",
    # MeanFlow, AlphaFlow and UAIMF on digits with p = 0.5, --lr-decay 0.3 and no training-time CFG
    **{f"{r}_p0.5_lr_decay_no_cfg (comparison)": ROOT / f"runs/{r}_p0.5_lr_decay_no_cfg/metrics.json" for r in ("meanflow_digits", "alphaflow")},
    # sCD from a freshly initialised student (--no-teacher-init), with and without the tangent normalisation and warm-up
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("scm_fresh", "scm_fresh_unstabilised")},
    # CD from a freshly initialised student (--no-teacher-init), on digits and on the checkerboard
    "cm_fresh (comparison)": ROOT / "runs/cm_fresh/metrics.json",
    "cm_fresh (2D)": ROOT / "runs/cm_fresh_checkerboard/metrics.json",
    # DMF with a decaying learning rate; FreeFlow for 4000 steps with a decaying learning rate (p = 1, p = 0.5, lr 1.5e-4), and 2000 steps at lr 3e-4
    "dmf_lr_decay (comparison)": ROOT / "runs/dmf_lr_decay/metrics.json",
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "freeflow_4k_lr_decay", "freeflow_4k_p0.5_lr_decay", "freeflow_4k_lr1.5e-4_lr_decay", "freeflow_lr3e-4_lr_decay")},
    # FreeFlow's present defaults (batch 64, finite-difference dF/ds, lr decay 0.3) for 4000 steps instead of 5000, run before its
    # Adam was fused; and FreeFlow's earlier default (2000 steps, batch 128, JVP, constant lr), run before the same change
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("freeflow_b64_fd_4k_lr_decay", "freeflow_2k")},
    # MeanFlow's 2D defaults (x-prediction) on seeds 1 and 2; the 2D defaults before x-prediction (--prediction v: the network
    # outputs u), seed 0 (the earlier runs/meanflow). Every 2D MeanFlow run listed below outputs u (--prediction v)
    **{f"{r} (2D)": ROOT / f"runs/{r}/metrics.json" for r in ("meanflow_x_seed1", "meanflow_x_seed2", "meanflow_v")},
    # MeanFlow on the checkerboard with the paper's settings, the 2D defaults before they changed (--p 1 --uniform-fraction 0 --lr-decay 0
    # --fourier-features 0); those settings on 64 random Fourier features of the input; the 2D defaults without the Fourier features,
    # and also with s = t on half the rows (these at 12000 steps, not compiled); the 2D defaults on seeds 1 and 2 (the default run,
    # runs/meanflow, is seed 0); the 2D defaults not compiled, for 8000 and for 12000 steps, on seeds 0, 1 and 2; compiled for 15000 steps
    **{f"{r} (2D)": ROOT / f"runs/{r}/metrics.json" for r in (
        "meanflow_p1", "meanflow_fourier64", "meanflow_p0_uniform1_lr_decay", "meanflow_p0_uniform1_lr_decay_equal0.5", "meanflow_seed1", "meanflow_seed2",
        "meanflow_8k", "meanflow_8k_seed1", "meanflow_8k_seed2", "meanflow_12k", "meanflow_12k_seed1", "meanflow_12k_seed2", "meanflow_15k")},
    # seed 1 of the 2D defaults at 8000 steps, not compiled, with one change each: s = t on 50 % / 25 % of the rows, lr 2e-3, evaluated
    # EMA 0.9995, p = 0.5, the finite-difference derivative at 12000 steps, and the finite difference on a width-128 MLP for 20000 steps
    **{f"meanflow_seed1_{r} (2D)": ROOT / f"runs/meanflow_seed1_{r}/metrics.json" for r in (
        "equal0.5", "equal0.25", "lr2e-3", "ema0.9995", "p0.5", "fd_12k", "fd_w128_20k")},
    # the compiled 2D defaults at batch 512 for 8000 steps (the same wall clock as 12000 steps of 256), seeds 0 and 1; seed 1 with
    # Fourier features of scale 2 (--fourier-scale 2)
    **{f"{r} (2D)": ROOT / f"runs/{r}/metrics.json" for r in ("meanflow_b512_8k_seed0", "meanflow_b512_8k_seed1", "meanflow_seed1_fourier_scale2")},
    # the compiled 2D defaults for 16000 steps on seeds 0 and 1, run with a fused Adam step (with which, in a scratch run of
    # bench/default_wall_time.py, 16000 steps would fit the budget; meanflow.py keeps the unfused step and 12000)
    **{f"{r} (2D)": ROOT / f"runs/{r}/metrics.json" for r in ("meanflow_16k", "meanflow_16k_seed1")},
    # UAIMF's defaults on seeds 1 and 2, and with Min-SNR instead of DTD on seeds 0, 1 and 2; AlphaFlow without training-time
    # CFG on seed 1 (how far one seed's 1-NFE FD is from another's)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "uaimf_seed1", "uaimf_seed2", "uaimf_min_snr", "uaimf_min_snr_seed1", "uaimf_min_snr_seed2")},
    "alphaflow_no_cfg_seed1 (comparison)": ROOT / "runs/alphaflow_no_cfg_seed1/metrics.json",
    # UAIMF's defaults run again on 2 threads of an otherwise idle machine, for its wall clock (its numbers differ from the default
    # run's only through the thread count's floating-point order)
    "uaimf_2threads (comparison)": ROOT / "runs/uaimf_2threads/metrics.json",
    # pMF's default of the time (JVP, pmf_jvp) run again on 2 threads of an otherwise idle machine, the check of
    # bench/default_wall_time.py's projection (8.7 min): the process took 529 s of wall clock (timed by the shell, not in metrics.json)
    "pmf_2threads (comparison)": ROOT / "runs/pmf_2threads/metrics.json",
    # UAIMF's defaults and AlphaFlow without training-time CFG evaluated with a longer EMA (--ema 0.9995)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("uaimf_ema0.9995", "alphaflow_no_cfg_ema0.9995")},
    # Latent Forcing's cascaded k = 4 run re-evaluated with 60 sampling steps (30 per phase) instead of 20
    "latent_forcing_k4_ode60 (re-evaluated)": ROOT / "runs/latent_forcing_k4_ode60/metrics.json",
    # Meta Flow Maps without (c, z_c) in the MLP's input layer (the earlier default), on 64 random Fourier features of the input
    "metaflow_fourier64 (comparison)": ROOT / "runs/metaflow_fourier64/metrics.json",
    # Meta Flow Maps without (c, z_c) in the input layer, with the plain squared error in both terms and lr decay 0.3; the default
    # with those loss settings, or with c drawn as 1 - U (--power 1)
    **{f"metaflow_{r} (comparison)": ROOT / f"runs/metaflow_{r}/metrics.json" for r in (
        "p0_lr_decay", "cond_input_p0_lr_decay", "cond_input_power1")},
    # Meta Flow Maps' default with an x-predicting network (--prediction x), also with c = 1 - U; and with the posterior
    # query point (z*, t*) as extra input (--query-input), with v- and with x-prediction
    **{f"metaflow_{r} (comparison)": ROOT / f"runs/metaflow_{r}/metrics.json" for r in ("x", "x_power1", "query", "query_x")},
    # Meta Flow Maps' default for 8000 steps
    "metaflow_8k (comparison)": ROOT / "runs/metaflow_8k/metrics.json",
    # --query-input with the plain squared error in both terms, and with c = 1 - U (--power 1)
    **{f"metaflow_{r} (comparison)": ROOT / f"runs/metaflow_{r}/metrics.json" for r in ("query_p0", "query_power1")},
    # pmf_7k's weights (the 7000-step default of the time) sampled at other guidance scales (--resume --omega W)
    **{f"pmf_w{w} (re-evaluated)": ROOT / f"runs/pmf_w{w}/metrics.json" for w in ("1.25", "1.5")},
    # pMF with iMF's adaptive weight (p = 1) at omega 1 and at the paper's sampling omega 1.5
    "pmf_adaptive (comparison)": ROOT / "runs/pmf_adaptive/metrics.json",
    "pmf_adaptive_w1.5 (comparison)": ROOT / "runs/pmf_adaptive_w1.5/metrics.json",
    # DMF with half the blocks on t (--decoupled-blocks 2 of 4), and at twice the learning rate (--lr 1e-3)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("dmf_k2", "dmf_lr1e-3")},
    # AlphaFlow's default for 10000 steps (the curriculum laid over them)
    "alphaflow_10k (comparison)": ROOT / "runs/alphaflow_10k/metrics.json",
    # pMF with heads that output the velocities (u, v) instead of images, everything else the default's
    "pmf_v (comparison)": ROOT / "runs/pmf_v/metrics.json",
    # pMF's default before du/dt became a forward difference (--derivative jvp; its Adam step was not fused then), the
    # x-prediction arm of the pmf_v ablation; and the present default for 7000 steps
    "pmf_jvp (comparison)": ROOT / "runs/pmf_jvp/metrics.json",
    # pMF with heads that output the noise (--prediction eps, v = (eps - z)/clip(1 - t)), with the JVP as pmf_jvp and pmf_v
    "pmf_eps (comparison)": ROOT / "runs/pmf_eps/metrics.json",
    "pmf_fd_7k (comparison)": ROOT / "runs/pmf_fd_7k/metrics.json",
    # UAIMF's default with du/dt a forward difference (--derivative fd), run with a fused Adam step
    "uaimf_fd (comparison)": ROOT / "runs/uaimf_fd/metrics.json",
    # DMF with dF/dt a forward difference for 6500 fine-tuning steps (about the default's wall clock), fused Adam step
    "dmf_fd_6500 (comparison)": ROOT / "runs/dmf_fd_6500/metrics.json",
    # pMF at width 384 for 8000 steps (about the default's time), run with a fused Adam step
    "pmf_w384_8k (comparison)": ROOT / "runs/pmf_w384_8k/metrics.json",
    # AlphaFlow's default with the paper's Adam beta2 0.95 (--beta2 0.95), with x-prediction heads (--prediction x:
    # u = (z - x_hat)/clip(t), as pMF and MeanFlow's 2D default), and with x-prediction and the plain squared error (--p 0)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("alphaflow_beta2_0.95", "alphaflow_x", "alphaflow_x_p0")},
    # DMF with the paper's adaptive weighted Cauchy loss (--loss cauchy), the default before the squared error, without gradient
    # clipping (--grad-clip 0), as every dmf_* comparison run above; DMF's default on seeds 1 and 2; the squared error without
    # clipping on seeds 0 and 1 (seed 1 diverged), and on seed 1 at lr 2e-4
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "dmf_cauchy", "dmf_seed1", "dmf_seed2", "dmf_no_clip", "dmf_seed1_no_clip", "dmf_seed1_lr2e-4")},
    # gradient clipping (--grad-clip 1.5, DMF's value, now a common flag) with the plain squared error (--p 0) on UAIMF and AlphaFlow;
    # AlphaFlow's curriculum laid as the paper's XL run (alpha from 1 to 0 between 50% and 83% of the run) and over the first half only
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "uaimf_p0_clip", "alphaflow_p0_clip", "alphaflow_xl_schedule", "alphaflow_end0.5")},
    # improved MeanFlow with x-prediction heads (--prediction x: u = (z - x_u)/clip(t), as pMF), and without training-time
    # guidance (--omega-max 1: omega = 1 on every row, so v_g = v_t)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("imf_x", "imf_omega_max1")},
    # improved MeanFlow with Adam's beta2 at 0.999 instead of iMF's 0.95; UAIMF's default without the gap weight (DTD only)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("imf_beta2_0.999", "uaimf_no_gap_weight")},
    # UAIMF's default with half the rows at s = t (--equal-fraction 0.5, as AlphaFlow and iMF) instead of MeanFlow's 75%, seeds 0 and 1
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("uaimf_equal0.5_seed0", "uaimf_equal0.5_seed1")},
    # AlphaFlow's earlier default (p = 1, no lr decay, the curriculum over the whole run: --alpha-end 1), and the default on seeds 1 and 2
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("alphaflow_p1_alpha_end1", "alphaflow_seed1", "alphaflow_seed2")},
    # AlphaFlow's default with the gradient norm clipped at 10 on seeds 0 and 1 (it acted on 1 step of 7000: the change
    # measures how far one seed's 1-NFE FD moves when its trajectory is perturbed), and MeanFlow with AlphaFlow's loss settings on seeds 1 and 2
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "alphaflow_clip10", "alphaflow_seed1_clip10", "meanflow_digits_p0.5_lr_decay_no_cfg_seed1", "meanflow_digits_p0.5_lr_decay_no_cfg_seed2")},
    # improved MeanFlow with MeanFlow's winning settings (no training-time guidance, lr decay, with and without p = 0.5) and
    # with pMF's time sampler (logit-normal(0, 0.8), 10% uniform, s = t rows set before sorting) and lr decay
    # (v heads and x heads), and v0 (imf's earlier default: shared trunk, width 512, sampled with the interval [0, 1]) on seeds 0, 1, 2
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "imf_no_cfg_lr_decay", "imf_no_cfg_p0.5_lr_decay", "imf_pmf_times", "imf_pmf_times_x", "imf_shared_trunk", "imf_shared_trunk_seed1",
        "imf_shared_trunk_seed2")},
    # improved MeanFlow without a sampled guidance interval (--no-interval: [0, 1] on every row), with v heads and iMF's times,
    # and with x heads, pMF's times and lr decay
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("imf_no_interval", "imf_pmf_times_x_no_interval")},
    # the last two x-head runs with the heads regressed onto (z - x)/clip(t), pMF's target (the default under --prediction x
    # since; imf_x and the two runs above regressed onto eps - x, now --no-clipped-target), on seeds 0 and 1
    **{f"{r}{k} (comparison)": ROOT / f"runs/{r}{k}/metrics.json" for r in ("imf_pmf_times_x_clipped_target", "imf_pmf_times_x_no_interval_clipped_target")
       for k in ("", "_seed1")},
    # Meta Flow Maps with the output preconditioned (x_hat = c_skip(t*) z* + c_out(t*) G at the posterior query point), without and with lr decay
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("metaflow_precondition", "metaflow_precondition_lr_decay")},
    # Meta Flow Maps' earlier default, the Eulerian consistency (--consistency eulerian, as every metaflow comparison above), with each
    # posterior figure averaged over 10 conditioning states instead of 3 (--posterior-points 10, now the default);
    # the two preconditioned runs re-evaluated that way (--resume, same weights); preconditioned with c = 1 - U (--power 1),
    # with the posterior query point as input (--query-input), and for 10000 steps (twice the default's, over the budget)
    "metaflow_p10 (comparison)": ROOT / "runs/metaflow_p10/metrics.json",
    **{f"{r}_p10 (re-evaluated)": ROOT / f"runs/{r}_p10/metrics.json" for r in ("metaflow_precondition", "metaflow_precondition_lr_decay")},
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "metaflow_precondition_power1_p10", "metaflow_precondition_query_p10", "metaflow_precondition_10k_p10")},
    # imf with MeanFlow's tangent (--tangent target), the v-head's loss weighted 0.1 (seeds 0 and 1), without training-time guidance
    # and with Adam's beta2 at 0.999 (tangent v_c, then v_g), and meanflow.py at imf's settings (5000 steps, p = 0, half the rows s = t)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "imf_tangent_target", "imf_v_weight0.1", "imf_v_weight0.1_seed1", "imf_no_cfg_beta2_0.999", "imf_no_cfg_tangent_target_beta2_0.999",
        "meanflow_digits_imf_settings", "imf_no_cfg_no_interval_tangent_target_beta2_0.999",
        "imf_no_cfg_no_interval_tangent_target_beta2_0.999_v_weight0")},  # the last two: no sampled interval, then the v-head's loss off too
    # imf with the v-head's own copies of the last 2, 3 or 4 of the 4 blocks (--aux-head-depth, iMF's MiT: 8 of 12), 4 also on
    # seed 1 and at width 384, and the walk's run without guidance or interval with all 4 blocks its own
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "imf_aux_head_depth2", "imf_aux_head_depth3", "imf_aux_head_depth4", "imf_aux_head_depth4_seed1", "imf_aux_head_depth4_w384",
        "imf_no_cfg_no_interval_tangent_target_beta2_0.999_aux_head_depth4")},
    # imf with the labels dropped on s = t rows only, as the official code (--drop-on-equal), on seeds 0 and 1; the training
    # guidance range at 2 and 8 (the official 1 + 7) against the default's 4; UAIMF with the same label dropout
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "imf_drop_on_equal", "imf_drop_on_equal_seed1", "imf_omega_max2", "imf_omega_max8", "uaimf_drop_on_equal",
        "uaimf_drop_on_equal_seed1", "uaimf_drop_on_equal_seed2", "meanflow_digits_p0.5_lr_decay_no_cfg_drop_on_equal")},
    # imf's default network and sampling interval at width 512 for 3600 steps (what fits 10 minutes), and the default on seeds 1 to 5
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("imf_aux_head_depth4_3600", *(f"imf_seed{seed}" for seed in range(1, 6)))},
    # imf's default with the learning rate decayed over the last 30 % (--lr-decay 0.3), with Adam's beta2 at 0.9, and evaluated on
    # EMAs of decay 0.9995 and 0.998 (--ema), each on seeds 0 and 1; alphaflow with the labels dropped on s = t rows only
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in (
        "imf_lr_decay0.3_k4", "imf_lr_decay0.3_k4_seed1", "imf_beta2_0.9", "imf_beta2_0.9_seed1", "imf_ema0.9995", "imf_ema0.9995_seed1",
        "imf_ema0.998", "imf_ema0.998_seed1", "alphaflow_drop_on_equal")},
    # Meta Flow Maps' default (the Lagrangian consistency) on seeds 1 and 2, and with the preconditioned output (--precondition)
    **{f"{r} (comparison)": ROOT / f"runs/{r}/metrics.json" for r in ("metaflow_seed1", "metaflow_seed2", "metaflow_lagrangian_precondition")},
    # the ablation's two-stream runs re-evaluated by --resume (same weights) after the pixels-given-the-data's-latent diagnostic was added
    **{f"latent_forcing {o} (re-evaluated)": ROOT / f"runs/latent_forcing_diag/{o}/metrics.json" for o in ("cascaded", "joint")},
}
STUDIES = {
    "repa_steps_to_fd": ROOT / "runs/repa_steps_to_fd/steps_to_fd.json",
    "latent_forcing_ablation": ROOT / "runs/latent_forcing_ablation/ablation.json",
    "unified_latents_sweep": ROOT / "runs/unified_latents_sweep/sweep.json",
    "jit_embedding_dimension": ROOT / "runs/jit_embedding_dimension/results.json",
    "flow_map_error": ROOT / "runs/flow_map_error.json",
    "fd_draws": ROOT / "runs/fd_draws.json",
    "fd_draws_sampling": ROOT / "runs/fd_draws_sampling.json",  # imf runs re-sampled at other guidance intervals (fd_draws.py --set)
}
BENCHES = {
    "step_cost": ROOT / "bench/out/step_cost.json",
    "fm_vs_peers": ROOT / "bench/out/fm_vs_peers.json",
    "jvp_attention": ROOT / "bench/out/jvp_attention.json",
    "recipe_step_cost": ROOT / "bench/out/recipe_step_cost.json",
    "recipe_step_cost_mlp": ROOT / "bench/out/recipe_step_cost_mlp.json",  # the MLP rows re-timed at their own settings
    "compiled_step": ROOT / "bench/out/compiled_step.json",
    "compiled_step_digits": ROOT / "bench/out/compiled_step_digits.json",
    "default_wall_time": ROOT / "bench/out/default_wall_time.json",
    "variant_wall_time": ROOT / "bench/out/variant_wall_time.json",
}


ARCHIVE = ROOT / "results"
"""Committed copies of the sources (loss histories dropped), read when runs/ or bench/out/ lacks them."""


def _archived(path: Path) -> Path:
    return ARCHIVE / path.relative_to(ROOT)


def _load(path: Path) -> dict | None:
    """The source at ``path`` (archived on the way), else its archived copy, else None."""
    if path.is_file():
        data = json.loads(path.read_text())
        data.pop("history", None)
        copy = _archived(path)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(json.dumps(data, indent=1) + "\n")
        return data
    copy = _archived(path)
    return json.loads(copy.read_text()) if copy.is_file() else None


def _exists(path: Path) -> bool:
    return path.is_file() or _archived(path).is_file()


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def run_table(runs: dict[str, dict]) -> list[str]:
    lines = ["| run | sampler | metric | value | data floor | class acc. | train time |", "|---|---|---|---|---|---|---|"]
    for label, m in runs.items():
        res = m["results"]
        key = "fd" if "fd" in res["floor"] else "sw2"
        for name, row in res.items():
            if name == "floor" or key not in row:
                continue
            acc = f"{100 * row['class_acc']:.1f}%" if "class_acc" in row else "-"
            minutes = f"{m['train_seconds'] / 60:.1f} min" if m.get("train_seconds", 0) >= 1 else "-"  # < 1 s: a finished run re-evaluated
            floor = row.get(f"{key}_floor", res["floor"][key])  # a posterior distance carries its own floor
            lines.append(f"| {label} | {name} | {'FD' if key == 'fd' else 'sliced W2'} | {_fmt(row[key])} | {_fmt(floor)} | {acc} | {minutes} |")
    return lines


def best(res: dict, names: list[str], key: str) -> float:
    return min(res[n][key] for n in names if n in res and key in res[n])


DRAWN_TARGET = "reported: one noise draw; the bar reads the next row, the same run's mean over draws"
"""The target cell of a single-draw 1-NFE row whose run scripts/fd_draws.py scored: the same estimand, FD at about 900 samples,
estimated from 5 draws instead of 1 (the teacher's recipe draw, 0.78, lies 1.4 sd below its 5-draw mean, 0.99)."""


def bar_lines(runs: dict[str, dict], benches: dict[str, dict], studies: dict[str, dict]) -> list[str]:
    out = ["| bar | measured | target | met |", "|---|---|---|---|"]

    def row(text: str, value: float, target: str, ok: bool) -> None:
        out.append(f"| {text} | {_fmt(value)} | {target} | {'yes' if ok else '**no**'} |")

    fm2d, mf = runs.get("fm (checkerboard)"), runs.get("meanflow (checkerboard)")
    if fm2d and mf:
        teacher = best(fm2d["results"], ["euler100", "heun100"], "sw2")
        one = mf["results"]["1nfe"]["sw2"]
        row("MeanFlow 1-NFE SW2 / FM 100-step SW2 (checkerboard)", one / teacher, "<= 1.5", one / teacher <= 1.5)
        floor = mf["results"]["floor"]["sw2"]
        row("MeanFlow 1-NFE SW2 / data floor (checkerboard)", one / floor, "<= 2", one / floor <= 2)
        others = [("meanflow_x_seed1", "seed 1"), ("meanflow_x_seed2", "seed 2")]  # the defaults on other seeds
        others += [(name, f"network outputting u, the earlier default, seed {seed}")
                   for seed, name in enumerate(("meanflow_v", "meanflow_seed1", "meanflow_seed2"))]
        for steps in (8, 12):  # the earlier default not compiled: 8000 steps, 9.4 min; 12000, 12.8 min
            others += [(f"meanflow_{steps}k", f"network outputting u, {steps}000 steps not compiled")]
            others += [(f"meanflow_{steps}k_seed{seed}", f"network outputting u, {steps}000 steps not compiled, seed {seed}") for seed in (1, 2)]
        for name, label in others:
            if other := runs.get(f"{name} (2D)"):
                one, floor = other["results"]["1nfe"]["sw2"], other["results"]["floor"]["sw2"]
                row(f"MeanFlow 1-NFE SW2 / FM 100-step SW2 (checkerboard, {label})", one / teacher, "<= 1.5", one / teacher <= 1.5)
                row(f"MeanFlow 1-NFE SW2 / data floor (checkerboard, {label})", one / floor, "<= 2", one / floor <= 2)
    study = studies.get("fd_draws") or {"runs": {}}
    draws = study["runs"] if "fm" in study["runs"] else {}  # scripts/fd_draws.py: FD on several noise draws (needs the teacher's)
    teacher_mean = min(g["mean"] for name, g in draws["fm"]["generators"].items() if name in ("euler50", "heun50")) if draws else 0.0
    mean_rows_done: set[str] = set()

    def mean_row(name: str) -> None:
        v = draws[name]["generators"]["1nfe"]["mean"] / teacher_mean
        row(f"{name} 1-NFE FD / FM 50-step FD (digits), each the mean of {study['draws']} noise draws", v, "<= 1.5", v <= 1.5)
        mean_rows_done.add(name)

    def one_nfe_row(text: str, name: str, v: float) -> None:
        """1-NFE FD over the teacher's on the recipe's draw: the bar's verdict, unless ``name`` was scored on several draws;
        then the verdict is its mean's (the next row)."""
        if "1nfe" in draws.get(name, {}).get("generators", {}):
            out.append(f"| {text} | {_fmt(v)} | {DRAWN_TARGET} | - |")
            mean_row(name)
        else:
            row(text, v, "<= 1.5", v <= 1.5)

    fm, pmf = runs.get("fm (digits)"), runs.get("pmf (digits)")
    if fm and pmf:
        teacher = best(fm["results"], ["euler50", "heun50"], "fd")
        one = pmf["results"]["1nfe"]
        one_nfe_row("pMF 1-NFE FD / FM 50-step FD (digits)", "pmf", one["fd"] / teacher)
        row("pMF 1-NFE class accuracy", one["class_acc"], ">= 0.90", one["class_acc"] >= 0.90)
    for label, m in runs.items():
        res = m["results"]
        if fm and label.endswith("(default)") and "fd" in res.get("1nfe", {}):
            teacher = best(fm["results"], ["euler50", "heun50"], "fd")
            one = res["1nfe"]
            one_nfe_row(f"{label.split()[0]} 1-NFE FD / FM 50-step FD (digits)", label.split()[0], one["fd"] / teacher)
            row(f"{label.split()[0]} 1-NFE class accuracy", one["class_acc"], ">= 0.90", one["class_acc"] >= 0.90)
            if "2nfe" in res:
                row(f"{label.split()[0]} 2-NFE FD / 1-NFE FD", res["2nfe"]["fd"] / one["fd"], "<= 1", res["2nfe"]["fd"] <= one["fd"])
            if label.startswith("scm") and "2nfe" in res:
                row("scm 2-NFE FD / FM 50-step FD (digits)", res["2nfe"]["fd"] / teacher, "<= 1.5", res["2nfe"]["fd"] / teacher <= 1.5)
    for recipe, seed in (("uaimf", 1), ("uaimf", 2), ("dmf", 1), ("dmf", 2), ("imf", 1), ("imf", 2), ("imf", 3), ("imf", 4), ("imf", 5)):  # defaults on other seeds
        if fm and (m := runs.get(f"{recipe}_seed{seed} (comparison)")):
            one = m["results"]["1nfe"]
            v = one["fd"] / best(fm["results"], ["euler50", "heun50"], "fd")
            one_nfe_row(f"{recipe} 1-NFE FD / FM 50-step FD (digits, seed {seed})", f"{recipe}_seed{seed}", v)
            row(f"{recipe} 1-NFE class accuracy (seed {seed})", one["class_acc"], ">= 0.90", one["class_acc"] >= 0.90)
    rf = runs.get("rectified_flow (default)")
    if fm and rf and "distill_1nfe" in rf["results"]:
        one, teacher = rf["results"]["distill_1nfe"], best(fm["results"], ["euler50", "heun50"], "fd")
        row("rectified_flow distilled 1-NFE FD / FM 50-step FD (digits)", one["fd"] / teacher, "<= 1.5", one["fd"] / teacher <= 1.5)
        row("rectified_flow distilled 1-NFE class accuracy", one["class_acc"], ">= 0.90", one["class_acc"] >= 0.90)
    for name in ("cm", "freeflow"):
        if (m := runs.get(f"{name} (2D)")) and "sw2" in m["results"].get("teacher_heun50", {}):
            v = m["results"]["1nfe"]["sw2"] / m["results"]["teacher_heun50"]["sw2"]
            row(f"{name} 1-NFE SW2 / its teacher's Heun-50 SW2 (checkerboard)", v, "<= 1.5", v <= 1.5)
    jit = runs.get("jit (default)")
    if fm and jit and "heun50" in jit["results"]:
        v = best(jit["results"], ["heun50", "heun50_nocfg"], "fd") / best(fm["results"], ["euler50", "heun50"], "fd")
        row("JiT 50-step Heun FD (better of CFG 1.5 and none) / FM 50-step FD (digits)", v, "<= 1.2", v <= 1.2)
    if benches.get("step_cost"):
        for r in benches["step_cost"]["rows"]:
            ratios = {k[6:]: v for k, v in r.items() if k.startswith("ratio_")}
            best_name = min(ratios, key=ratios.get)
            for name, v in ratios.items():
                if name == best_name:
                    row(f"MeanFlow step / FM step, {r['model']}, best back end ({name})", v, "<= 1.7", v <= 1.7)
                else:
                    out.append(f"| MeanFlow step / FM step, {r['model']}, {name} | {_fmt(v)} | reported | - |")
        for r in benches["step_cost"]["rows"]:
            if "ratio_fused" in r and "256" in r["model"]:
                v = r["ratio_fused"] / r["ratio_jvp"]
                row(f"MeanFlow step with fused / with math JVP, {r['model']}", v, "< 1", v < 1)
    for name in ("compiled_step", "compiled_step_digits"):  # bench/compiled_step.py: what --compile buys the recipes' MLPs
        if cs := benches.get(name):
            what = f"{cs['model']}, batch {cs['batch']}, {cs['threads']} threads"
            out.append(f"| MeanFlow step, JVP compiled / eager, {what} (compiling: {cs['compile_seconds']:.0f} s once) | {_fmt(cs['compiled_over_eager'])} | reported | - |")
            out.append(f"| MeanFlow step / FM step (eager), {what}: eager JVP / compiled JVP | {_fmt(cs['eager_over_fm'])} / {_fmt(cs['compiled_over_fm'])} | reported | - |")
    for name, r in draws.items():  # the other runs scored on several draws
        if name not in mean_rows_done and "1nfe" in r["generators"]:
            mean_row(name)
    if wall := benches.get("default_wall_time"):  # bench/default_wall_time.py: the recipe contract's 10-minute budget
        for r in wall["rows"]:
            row(f"{r['recipe']} {'default run' if not r.get('flags') else 'run with ' + r['flags']}, wall clock in minutes ({wall['threads']} threads, projected; steps in the wall-clock table)",
                r["projected_minutes"], f"<= {wall['budget_minutes']:g}", r["within_budget"])
    att = benches.get("jvp_attention")
    if att:
        t, mem = att["times_ms"], att["extra_memory_bytes"]
        for n in ("1024", "4096"):
            if n in t["sdpa_fwd"]:
                v = t["fused_fwd_tangent"][n] / t["sdpa_fwd"][n]
                row(f"fused fwd+tangent / SDPA fwd, N={n}", v, "<= 3.0", v <= 3.0)
        for n in ("2048", "4096"):
            if n in t["sdpa_fwd"]:
                v = t["math_fwd_tangent"][n] / t["fused_fwd_tangent"][n]
                row(f"speed-up over SDPA(MATH)+jvp, N={n}", v, ">= 5", v >= 5)
        v = mem["fused"] / max(mem["math"], 1)
        row(f"extra memory fused / MATH, N={att['memory_n']}", v, "<= 0.05", v <= 0.05)
        for n in ("1024", "4096"):
            if n in t["sdpa_fwd_bwd"]:
                v = t["fused_fwd_bwd"][n] / t["sdpa_fwd_bwd"][n]
                row(f"fused fwd+bwd (O, O') / SDPA fwd+bwd, N={n}", v, "<= 3.5", v <= 3.5)
    if benches.get("fm_vs_peers"):
        for name, v in benches["fm_vs_peers"]["ratios"].items():
            row(f"flowcore FM step / {name} FM step", v, "<= 1.05", v <= 1.05)
    return out


NFE = ("1nfe", "2nfe", "4nfe")
MARGIN = 0.95  # "A beats B" needs A's FD at least 5% below B's: smaller gaps are within seed noise at this scale


def _series(res: dict, names: tuple[str, ...], key: str = "fd") -> str:
    return " / ".join(_fmt(res[n][key]) for n in names if n in res)


def claim_lines(runs: dict[str, dict], studies: dict[str, dict]) -> list[str]:
    """Each paper's key claim at toy scale, read from its default run and the comparison run named beside it."""
    out = ["| claim | compared | measured (digits FD unless said) | holds |", "|---|---|---|---|"]

    def claim(text: str, compared: str, measured: str, holds: bool) -> None:
        out.append(f"| {text} | {compared} | {measured} | {'yes' if holds else '**no**'} |")

    def get(name: str) -> dict | None:
        return runs.get(f"{name} (default)") or runs.get(f"{name} (comparison)")

    mf = get("meanflow_digits")
    alpha, ua = "AlphaFlow's curriculum beats MeanFlow at equal steps", "UAIMF's weighting converges faster than MeanFlow (equal steps)"
    matched = ", both with p = 0.5, lr decay 0.3 and no training-time CFG"
    # (variant run, MeanFlow run with the same settings, claim text); uaimf's defaults are p = 0.5, lr decay 0.3, no CFG
    whole, half = " (alpha's curriculum over the whole run)", " (alpha's curriculum over the first half of the run, alphaflow's default)"
    pairs = [("alphaflow_paper", "meanflow_digits", alpha + ", both with the paper's training-time CFG (omega 1.5, kappa 0.5)" + whole),
             ("alphaflow_p1_alpha_end1", "meanflow_digits_no_cfg", alpha + ", both without training-time CFG" + whole),
             ("alphaflow_p0.5_lr_decay_no_cfg", "meanflow_digits_p0.5_lr_decay_no_cfg", alpha + matched + whole),
             ("alphaflow", "meanflow_digits_p0.5_lr_decay_no_cfg", alpha + matched + half),
             *((f"alphaflow_seed{k}", f"meanflow_digits_p0.5_lr_decay_no_cfg_seed{k}", alpha + matched + half + f", seed {k}") for k in (1, 2)),
             ("uaimf_no_cfg", "meanflow_digits_no_cfg", ua + ", both without training-time CFG"),
             ("uaimf", "meanflow_digits_p0.5_lr_decay_no_cfg", ua + matched)]
    for name, base_name, text in pairs:
        if (r := get(name)) and (base := get(base_name)):
            claim(text, f"`{name}` vs `{base_name}`, {r['steps']} vs {base['steps']} steps",
                  f"1/2/4 NFE: {_series(r['results'], NFE)} vs {_series(base['results'], NFE)}",
                  r["results"]["1nfe"]["fd"] < MARGIN * base["results"]["1nfe"]["fd"])
    if (a := get("pmf_adaptive")) and (r := get("pmf_7k")):
        claim("MeanFlow's adaptive weight w = 1/(sg(L) + c)^p with p = 1 beats the plain squared error (p = 0)",
              "`pmf_adaptive` (p = 1) vs `pmf_7k` (p = 0), 7000 steps each, both sampled at omega 1",
              f"1/2/4 NFE: {_series(a['results'], NFE)} vs {_series(r['results'], NFE)}", a["results"]["1nfe"]["fd"] < MARGIN * r["results"]["1nfe"]["fd"])
    if (r := get("pmf_jvp")) and (o := get("pmf_v")):
        claim("pMF: x-prediction beats u- and v-prediction (heads that output velocities) at 1 NFE, the same recipe otherwise",
              f"`pmf_jvp` vs `pmf_v`, {r['steps']} vs {o['steps']} steps", f"1/2/4 NFE: {_series(r['results'], NFE)} vs {_series(o['results'], NFE)}",
              r["results"]["1nfe"]["fd"] < MARGIN * o["results"]["1nfe"]["fd"])
    if (r := get("pmf_jvp")) and (o := get("pmf_eps")):
        claim("pMF: x-prediction beats eps-prediction (heads that output the noise) at 1 NFE, the same recipe otherwise",
              f"`pmf_jvp` vs `pmf_eps`, {r['steps']} vs {o['steps']} steps", f"1/2/4 NFE: {_series(r['results'], NFE)} vs {_series(o['results'], NFE)}",
              r["results"]["1nfe"]["fd"] < MARGIN * o["results"]["1nfe"]["fd"])
    if (r := get("dmf")) and mf:
        res = r["results"]
        claim("DMF converted from FM reaches 1-NFE quality sooner than MeanFlow from scratch", f"`dmf` ({r['steps']} fine-tuning steps) vs `meanflow_digits` ({mf['steps']} steps)",
              f"converted before fine-tuning {_series(res, tuple('converted_' + n for n in NFE))}; fine-tuned {_series(res, NFE)}; MeanFlow {_series(mf['results'], NFE)}",
              res["1nfe"]["fd"] < mf["results"]["1nfe"]["fd"] and r["steps"] <= mf["steps"])
    if r := get("tvm"):
        res = r["results"]
        claim("TVM improves from 1 to 2 to 4 NFE", "`tvm`", f"1/2/4 NFE: {_series(res, NFE)}", res["1nfe"]["fd"] >= res["2nfe"]["fd"] >= res["4nfe"]["fd"])
    if (r := get("tvm_5k")) and (nw := get("tvm_no_cfg_weight")):
        res = r["results"]
        claim("TVM's 1/w^2 weighting matters under random CFG", "`tvm_5k` vs `tvm_no_cfg_weight`, 5000 steps each",
              f"1/2/4 NFE: {_series(res, NFE)} vs {_series(nw['results'], NFE)}", res["1nfe"]["fd"] < MARGIN * nw["results"]["1nfe"]["fd"])
    if (r := get("rectified_flow")) and "rounds" in r:
        rounds = [x for x in r["rounds"] if "straightness" in x]
        if len(rounds) > 1:
            s_, e1 = [x["straightness"] for x in rounds], [x["error_euler1"] for x in rounds]
            claim("reflow straightens the flow and lowers few-step error round by round", "`rectified_flow` rounds 0..k",
                  "straightness " + " -> ".join(map(_fmt, s_)) + "; 1-step Euler error " + " -> ".join(map(_fmt, e1)),
                  all(a > b for a, b in zip(s_, s_[1:])) and all(a > b for a, b in zip(e1, e1[1:])))
    if (r := get("jit")) and (v := get("jit_v")):
        a, b = (best(m["results"], ["heun50", "heun50_nocfg"], "fd") for m in (r, v))
        claim("x-prediction beats v-prediction for the pixel transformer", "`jit` (x) vs `jit_v` (v), 50 Heun steps, better of CFG 1.5 and none",
              f"{_fmt(a)} vs {_fmt(b)}", a < b)
    cd, ct, ict = get("cm"), get("cm_ct"), get("cm_ict")
    for name, start in (("cm", "the student starts as the teacher"), ("cm_fresh", "a freshly initialised student")):
        if (m := get(name)) and "teacher_heun50" in m["results"]:
            res = m["results"]
            claim(f"CD: 1 step close to the teacher's 50 steps ({start})", f"`{name}` (cd) 1 NFE vs its teacher's Heun 50",
                  f"{_fmt(res['1nfe']['fd'])} vs {_fmt(res['teacher_heun50']['fd'])}", res["1nfe"]["fd"] <= 1.5 * res["teacher_heun50"]["fd"])
            claim(f"CM: quality stops improving from 2 to 4 steps ({start})", f"`{name}` (cd) 2 vs 4 NFE", f"1/2/4 NFE: {_series(res, NFE)}",
                  res["4nfe"]["fd"] >= 0.95 * res["2nfe"]["fd"])
    if cd and ct:
        res = cd["results"]
        claim("CT from scratch is worse than CD at equal steps", "`cm_ct` vs `cm`", f"1 NFE: {_fmt(ct['results']['1nfe']['fd'])} vs {_fmt(res['1nfe']['fd'])}",
              ct["results"]["1nfe"]["fd"] > res["1nfe"]["fd"])
        if ict:
            a, b, c = (m["results"]["1nfe"]["fd"] for m in (ct, ict, cd))
            closed = (a - b) / (a - c) if a != c else float("nan")
            claim("iCT closes most of the CT-CD gap", "`cm_ict` between `cm_ct` and `cm`", f"1 NFE: CT {_fmt(a)}, iCT {_fmt(b)}, CD {_fmt(c)}; gap closed {_fmt(closed)}", closed > 0.5)
    for name, start in (("cm", "the student starts as the teacher"), ("cm_fresh", "a freshly initialised student")):
        if (r := runs.get(f"{name} (2D)")) and "teacher_heun50" in r["results"]:
            res = r["results"]
            claim(f"CD on 2D: 1 step close to the teacher's 50 steps, and no gain from 2 to 4 steps ({start})",
                  f"`{name}` (`--data checkerboard`) vs its teacher's Heun 50",
                  f"sliced W2 1/2/4 NFE: {_series(res, NFE, 'sw2')}; teacher {_fmt(res['teacher_heun50']['sw2'])}",
                  res["1nfe"]["sw2"] <= 1.5 * res["teacher_heun50"]["sw2"] and res["4nfe"]["sw2"] >= 0.95 * res["2nfe"]["sw2"])
            if mf := runs.get("meanflow (checkerboard)"):
                m = mf["results"]
                claim(f"CM on 2D stops improving from 2 to 4 steps beside a flow map that improves ({start})",
                      f"`{name}` (`--data checkerboard`) vs `meanflow` (checkerboard)",
                      f"sliced W2 2/4 NFE: CM {_series(res, ('2nfe', '4nfe'), 'sw2')}, MeanFlow {_series(m, ('2nfe', '4nfe'), 'sw2')}",
                      res["4nfe"]["sw2"] >= 0.95 * res["2nfe"]["sw2"] and m["4nfe"]["sw2"] < 0.95 * m["2nfe"]["sw2"])
    for stable, unstable, start in (("scm_6k", "scm_unstabilised", "the student starts as the teacher"),
                                    ("scm_fresh", "scm_fresh_unstabilised", "a freshly initialised student")):
        if (r := get(stable)) and (u := get(unstable)):
            claim(f"sCM: tangent normalisation and warm-up stabilise training ({start})", f"`{stable}` vs `{unstable}`",
                  f"1/2/4 NFE: {_series(r['results'], NFE)} vs {_series(u['results'], NFE)}", r["results"]["1nfe"]["fd"] < MARGIN * u["results"]["1nfe"]["fd"])
    if (r := get("freeflow")) and (n := get("freeflow_no_correction")):
        claim("FreeFlow: the correction loss improves on the prediction loss alone", "`freeflow` vs `freeflow_no_correction`",
              f"1 NFE: {_fmt(r['results']['1nfe']['fd'])} vs {_fmt(n['results']['1nfe']['fd'])}", r["results"]["1nfe"]["fd"] < n["results"]["1nfe"]["fd"])
    for name, which in (("metaflow", "the default, Lagrangian consistency"), ("metaflow_seed1", "the default, seed 1"), ("metaflow_seed2", "the default, seed 2"),
                        ("metaflow_p10", "Eulerian consistency, the earlier default")):
        if not (r := get(name)):
            continue
        rows = [(k, v) for k, v in r["results"].items() if k.startswith("posterior_") and k.endswith("_1nfe")]
        if rows:
            worst = max(v["sw2"] / v["sw2_floor"] for _, v in rows)
            claim(f"Meta Flow Maps: 1-step posterior samples match the exact posterior (sliced W2 / floor, worst t; {r['posterior_points']} conditioning "
                  f"states per t; {which})", f"`{name}`, exact mixture posterior",
                  ", ".join(f"{k[10:-5]}: {_fmt(v['sw2'])} (floor {_fmt(v['sw2_floor'])})" for k, v in rows), worst <= 2)
        one, floor = r["results"]["1nfe"]["sw2"], r["results"]["floor"]["sw2"]
        claim(f"Meta Flow Maps: unconditional 1-step samples match the data (sliced W2 / floor; {which})", f"`{name}`",
              f"{_fmt(one)} vs floor {_fmt(floor)}", one <= 2 * floor)
    if (r := get("drifting")) and (a := get("drifting_attraction1.5")):
        claim("Drifting: breaking the anti-symmetry (attraction 1.5x repulsion) hurts", "`drifting` vs `drifting_attraction1.5`",
              f"1 NFE: {_fmt(r['results']['1nfe']['fd'])} vs {_fmt(a['results']['1nfe']['fd'])}", r["results"]["1nfe"]["fd"] < a["results"]["1nfe"]["fd"])
    if r := get("drifting_checkerboard"):
        one, floor = r["results"]["1nfe"]["sw2"], r["results"]["floor"]["sw2"]
        claim("Drifting: 1-NFE samples on 2D near the data floor (sliced W2 within 2x)", "`drifting_checkerboard`", f"{_fmt(one)} vs floor {_fmt(floor)}", one <= 2 * floor)
        if a := get("drifting_checkerboard_attraction1.5"):
            worse = a["results"]["1nfe"]["sw2"]
            claim("Drifting on 2D: attraction 1.5x repulsion hurts", "`drifting_checkerboard` vs `drifting_checkerboard_attraction1.5`",
                  f"sliced W2 {_fmt(one)} vs {_fmt(worse)}", one < worse)
    if st := studies.get("jit_embedding_dimension"):
        low, high = min(st["results"], key=int), max(st["results"], key=int)
        width = st["config"]["width"]
        growth = {p: st["results"][high][p].get("sw2", float("inf")) / st["results"][low][p]["sw2"] for p in ("x", "eps", "v")}
        off = {p: st["results"][high][p].get("off_plane", float("inf")) for p in ("x", "eps", "v")}
        claim(f"JiT: as the data dimension D grows past the network's width, x-prediction's samples stay near the data plane while eps- and "
              "v-prediction's fill the other dimensions with noise "
              f"(2D data in D = {low} vs {high}, MLP width {width})", "`scripts/jit_embedding_dimension.py`",
              f"sliced W2 at D = {high} / at D = {low}: x {_fmt(growth['x'])}, eps {_fmt(growth['eps'])}, v {_fmt(growth['v'])}; "
              f"off-plane norm at D = {high}: x {_fmt(off['x'])}, eps {_fmt(off['eps'])}, v {_fmt(off['v'])}",
              growth["x"] <= min(growth["eps"], growth["v"]) and off["x"] < 0.1 * min(off["eps"], off["v"]))
    if st := studies.get("repa_steps_to_fd"):
        arms, seeds = st["arms"], len(st["seeds"])
        base, ours, rand = arms["none"], arms.get("trained"), arms.get("random")
        text = lambda a: f"{_fmt(a['steps_mean'])} +- {_fmt(a['steps_std'])} ({a['reached']}/{a['runs']} reached)"
        if ours:
            claim(f"REPA reaches plain FM's final FD ({_fmt(st['threshold_fd'])}, its worst seed's) in fewer steps than plain FM ({seeds} seeds, {st['steps']} steps)",
                  "`scripts/repa_steps_to_fd.py`: trained encoder vs none", f"steps {text(ours)} vs {text(base)}",
                  ours["reached"] == ours["runs"] and ours["steps_mean"] < MARGIN * base["steps_mean"])
        if rand:
            claim("REPA with a randomly initialised encoder gives no such gain", "`scripts/repa_steps_to_fd.py`: random encoder vs none",
                  f"steps {text(rand)} vs {text(base)}", not (rand["reached"] == rand["runs"] and rand["steps_mean"] < MARGIN * base["steps_mean"]))
    if st := studies.get("latent_forcing_ablation"):
        rows = {r["order"]: r for r in st}
        fd = lambda r: min(v for k, v in r.items() if re.fullmatch(r"(heun|euler)\d+(_nocfg)?_fd", k) and v is not None)  # noqa: E731
        if "cascaded" in rows:
            for other, text in (("joint", "Latent Forcing: the cascaded order beats joint random times (equal steps)"),
                                ("pixel-only", "Latent Forcing beats plain pixel flow matching at equal steps")):
                if other in rows:
                    a, b = fd(rows["cascaded"]), fd(rows[other])
                    claim(text, f"`scripts/latent_forcing_ablation.py`: cascaded vs {other}, {rows['cascaded']['steps']} steps, better of CFG and none",
                          f"{_fmt(a)} vs {_fmt(b)} ({_fmt(rows['cascaded']['train_seconds'] / 60)} vs {_fmt(rows[other]['train_seconds'] / 60)} min)", a < MARGIN * b)
    if st := studies.get("unified_latents_sweep"):
        rows = sorted(st["rows"], key=lambda r: r["lambda0"])
        bits, psnr, fd = ([r[k] for r in rows] for k in ("bits_per_image", "recon_psnr", "sample_fd"))
        rising = lambda xs: all(a < b for a, b in zip(xs, xs[1:]))  # noqa: E731
        claim("Unified Latents: less latent noise (higher lambda_0) carries more bits and reconstructs better, but is harder for the prior to model",
              "`scripts/unified_latents_sweep.py`", "lambda_0 " + " / ".join(_fmt(r["lambda0"]) for r in rows) + ": bits/image " + " / ".join(map(_fmt, bits))
              + ", PSNR " + " / ".join(map(_fmt, psnr)) + " dB, sample FD " + " / ".join(map(_fmt, fd)), rising(bits) and rising(psnr) and rising(fd))
    return out


def study_tables(studies: dict[str, dict]) -> list[str]:
    """The tables of the issue-6 studies and JiT's embedding toy, each from its script's JSON."""
    parts: list[str] = []
    if st := studies.get("unified_latents_sweep"):
        cols = ("lambda0", "sigma0", "bits_per_image", "bits_per_pixel", "recon_psnr", "recon_fd", "sample_fd", "class_acc")
        parts += ["", f"### Unified Latents: latent noise vs bitrate vs quality (`scripts/unified_latents_sweep.py`, {st['steps']} steps each)", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        parts += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in st["rows"]]
    if st := studies.get("latent_forcing_ablation"):
        keys = [k for k in dict.fromkeys(k for r in st for k in r) if k != "order"]
        parts += ["", "### Latent Forcing ordering ablation (`scripts/latent_forcing_ablation.py`, equal optimizer steps)", "",
                  "Each order ran at one thread; the cascaded run shared its core with short test jobs for part of its run, "
                  "so its train_seconds overstate its cost.", "",
                  "| order | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        parts += ["| " + r["order"] + " | " + " | ".join(_fmt(r[k]) if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in keys) + " |" for r in st]
    if st := studies.get("repa_steps_to_fd"):
        parts += ["", f"### REPA steps to FD {_fmt(st['threshold_fd'])} ({_fmt(st['threshold_factor'])}x the worst final plain-FM FD, which every plain-FM seed reaches; "
                  f"`scripts/repa_steps_to_fd.py`, seeds {st['seeds']}, {st['steps']} steps)", "",
                  "| encoder | steps to FD per seed | mean +- std | final FD mean +- std |", "|---|---|---|---|"]
        for arm, a in st["arms"].items():
            per_seed = ", ".join("-" if s is None else str(s) for s in a["steps_to_fd"])
            parts.append(f"| {arm} | {per_seed} | {_fmt(a['steps_mean'])} +- {_fmt(a['steps_std'])} | {_fmt(a['final_fd_mean'])} +- {_fmt(a['final_fd_std'])} |")
        if levels := st.get("levels"):
            arms = list(levels[0]["arms"])
            parts += ["", "Steps to reach each FD level, interpolated between curve points (mean +- std over seeds, reached/seeds):", "",
                      "| FD level | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
            for row in levels:
                cells = [f"{_fmt(a['mean'])} +- {_fmt(a['std'])} ({sum(r is not None for r in a['steps'])}/{len(a['steps'])})" for a in row["arms"].values()]
                parts.append(f"| {_fmt(row['level'])} | " + " | ".join(cells) + " |")
    if st := studies.get("jit_embedding_dimension"):
        c = st["config"]
        preds = c["predictions"]
        parts += ["", f"### JiT's toy: 2D {c['data']} embedded in D dims, MLP width {c['width']}, {c['steps']} steps, Heun {c['ode_steps']} "
                  "(`scripts/jit_embedding_dimension.py`; sliced W2 of the samples projected back / data floor, and mean norm off the data plane)", "",
                  "| D | " + " | ".join(f"{p}: SW2 / floor" for p in preds) + " | " + " | ".join(f"{p}: off-plane" for p in preds) + " |",
                  "|---|" + "---|" * (2 * len(preds))]
        for dim, row in st["results"].items():
            ratio = [_fmt(row[p]["sw2"] / row[p]["sw2_floor"]) if "sw2" in row[p] else "diverged" for p in preds]
            off = [_fmt(row[p]["off_plane"]) if "off_plane" in row[p] else "-" for p in preds]
            parts.append(f"| {dim} | " + " | ".join(ratio + off) + " |")
    if st := studies.get("fd_draws"):
        parts += ["", f"### Digits FD over {st['draws']} noise draws (`scripts/fd_draws.py`: each run's EMA weights sampled from {st['draws']} "
                  "independent draws of noise for the same labels, scored against the same half of the digits; draw 0 is the run's own evaluation)", "",
                  "| run | generator | FD per draw | mean | sd |", "|---|---|---|---|---|"]
        if fm_heun := st["runs"].get("fm", {}).get("generators", {}).get("heun50"):
            worst = worst_draw_counts(st["runs"], fm_heun["fd"])
            parts[-2:-2] = [f"Each run's 1-NFE FD over the FM teacher's Heun-50 FD on the same draw is highest on draw {k} for {n} of "
                            f"{sum(worst.values())} runs" for k, n in sorted(worst.items())] + [""]
        parts += draw_rows(st)
    if st := studies.get("fd_draws_sampling"):
        parts += ["", f"### Digits FD over {st['draws']} noise draws, re-sampled with a sampling flag changed (`scripts/fd_draws.py --set FLAG=VALUE`: "
                  "the same weights and draws as above, the changed flags in brackets)", "", "| run | generator | FD per draw | mean | sd |", "|---|---|---|---|---|"]
        parts += draw_rows(st)
    if st := studies.get("flow_map_error"):
        bands = [f"[{lo:g}, {hi:g})" for lo, hi in st["bands"]]
        parts += ["", f"### Where MeanFlow's 2D jumps go wrong (`scripts/flow_map_error.py`: mean distance to the FM teacher's 200-step ODE map "
                      f"from the same noise, by the noise's norm; {st['samples']} draws)", "",
                  "| run | NFE | " + " | ".join(f"norm in {b}" for b in bands) + " |", "|---|---|" + "---|" * len(bands)]
        for run, rows in st["runs"].items():
            parts += [f"| {Path(run).name} | {k[:-3]} | " + " | ".join(_fmt(e) for e in errors) + " |" for k, errors in rows.items()]
    return parts


def draw_rows(study: dict) -> list[str]:
    """One table row per run and generator of a scripts/fd_draws.py JSON: FD per draw, mean, sd."""
    return [f"| {name} | {gen} | {' / '.join(_fmt(x) for x in g['fd'])} | {_fmt(g['mean'])} | {_fmt(g['sd'])} |"
            for name, r in study["runs"].items() for gen, g in r["generators"].items()]


def worst_draw_counts(runs: dict, teacher_fd: list[float]) -> dict[int, int]:
    """For each draw k, how many runs' 1-NFE FD / the teacher's FD on the same draw is largest on draw k."""
    counts: dict[int, int] = {}
    for name, r in runs.items():
        if name != "fm" and (one := r["generators"].get("1nfe")):
            ratios = [fd / t for fd, t in zip(one["fd"], teacher_fd)]
            k = ratios.index(max(ratios))
            counts[k] = counts.get(k, 0) + 1
    return counts


def section() -> str:
    runs = {k: m for k, p in RUNS.items() if (m := _load(p)) is not None}
    benches = {k: m for k, p in BENCHES.items() if (m := _load(p)) is not None}
    studies = {k: m for k, p in STUDIES.items() if (m := _load(p)) is not None}
    sources = list(RUNS.values()) + list(STUDIES.values()) + list(BENCHES.values())
    parts = ["Sources (each also archived under `results/`): " + ", ".join(f"`{p.relative_to(ROOT)}`" for p in sources if _exists(p)), ""]
    parts += ["### Bars", ""] + bar_lines(runs, benches, studies) + ["", "### Paper claims at toy scale", ""] + claim_lines(runs, studies) + study_tables(studies) + ["", "### Runs (EMA weights; FD in the shipped classifier's features)", "",
              "Train time is the wall clock the run measured. meanflow_v, uaimf_2threads, pmf_2threads and imf used 2 threads on an otherwise idle machine "
              "(uaimf_2threads in an earlier session, when the machine ran the same step about a quarter slower than in the wall-clock table); all others "
              "(the other default runs and every comparison run) ran at one thread (`OMP_NUM_THREADS=1 taskset -c N`) beside other jobs, "
              "so their times overstate a 2-core run.", ""] + run_table(runs)
    for recipe, key, label in (("pmf", "fd", "FD"), ("meanflow", "sw2", "sliced W2")):
        budget = _load(ROOT / f"runs/{recipe}_budget/quality_vs_time.json")
        if not budget:
            continue
        how = "one run continued by --resume" if budget.get("resumed", True) else "one run from scratch per budget (the default decays its learning rate over the run's end)"
        parts += ["", f"### {recipe} quality vs training time (`scripts/quality_vs_time.py {recipe}`: {how}; "
                  "budget minutes = steps at the default run's measured rate on 2 threads)", "",
                  f"| budget minutes | steps | 1-NFE {label} | 2-NFE {label} | 4-NFE {label} | data floor |", "|---|---|---|---|---|---|"]
        for r in budget["rows"]:
            res = r["results"]
            parts.append(f"| {r['minutes_budget']:g} | {r['steps']} | {_fmt(res['1nfe'][key])} | {_fmt(res['2nfe'][key])} | "
                         f"{_fmt(res['4nfe'][key])} | {_fmt(res['floor'][key])} |")
    if benches.get("step_cost"):
        b = benches["step_cost"]
        parts += ["", "### MeanFlow vs FM step cost", "", f"Step cost: batch {b['batch']}, median of {b['repeats']}, {b['threads']} threads (`bench/step_cost.py`)."]
    if rsc := benches.get("recipe_step_cost"):
        parts += ["", "### Recipe step costs", "", f"Each recipe's own training step against an FM step, same model and batch {rsc['batch']} "
                  "(`bench/recipe_step_cost.py`: slope of train_seconds between a short and a long run, FM and recipe runs alternating; "
                  "train_seconds is rounded to 0.1 s, so a time's resolution is 0.1 s / (long - short)):", "",
                  "| model | recipe | derivative | threads | steps short/long | ms / step | x FM step |", "|---|---|---|---|---|---|---|"]
        for block in (rsc, benches.get("recipe_step_cost_mlp")):
            for r in (block or {}).get("rows", []):
                parts.append(f"| {r['model']} | {r['recipe']} | {r['derivative']} | {block['threads']} | {block['short']}/{block['long']} | "
                             f"{r['ms_per_step']:.1f} | {r['ratio_to_fm']:.2f} |")
    if wall := benches.get("default_wall_time"):
        parts += ["", "### Default runs' wall clock", "", f"Each recipe's default run, {wall['threads']} threads, projected from two runs of that default "
                  f"(`bench/default_wall_time.py`): the whole process at {wall['short']} steps (start-up, teacher, default evaluation) plus "
                  f"the remaining steps at the slope of train_seconds between {wall['short']} and {wall['long']} steps:", "",
                  f"| recipe | default steps | ms / step | wall at {wall['short']} steps (s) | projected minutes | within {wall['budget_minutes']:g} min |",
                  "|---|---|---|---|---|---|"]
        for r in wall["rows"]:
            parts.append(f"| {r['recipe']} | {r['steps']} | {r['ms_per_step']:.1f} | {r['wall_seconds_short']:.1f} | {r['projected_minutes']:.1f} | "
                         f"{'yes' if r['within_budget'] else '**no**'} |")
    if variants := benches.get("variant_wall_time"):
        parts += ["", "### Flag variants' wall clock", "", f"Recipes run with extra flags, {variants['threads']} threads, projected as above, each timed in the "
                  f"same invocation as the recipe's default (`bench/default_wall_time.py` with quoted flags):", "",
                  "| recipe | flags | steps | ms / step | x the default's step | projected minutes |", "|---|---|---|---|---|---|"]
        for r in variants["rows"]:
            ratio = f"{r['step_ratio_to_default']:.2f}" if "step_ratio_to_default" in r else "-"
            parts.append(f"| {r['recipe']} | {r.get('flags') or '(default)'} | {r['steps']} | {r['ms_per_step']:.1f} | {ratio} | {r['projected_minutes']:.1f} |")
    if att := benches.get("jvp_attention"):
        parts += ["", "### Attention JVP timings", "", f"Attention: B=1, H=8, D=64, fp32, {att['threads']} threads, median times in ms (`bench/jvp_attention.py`):", "",
                  "| N | " + " | ".join(att["times_ms"]) + " |", "|---|" + "---|" * len(att["times_ms"])]
        for n in att["times_ms"]["sdpa_fwd"]:
            parts.append(f"| {n} | " + " | ".join(f"{att['times_ms'][k].get(n, float('nan')):.1f}" for k in att["times_ms"]) + " |")
    return "\n".join(parts)


def _heading_key(line: str) -> str:
    """A '### ' heading without its parenthesised details and numbers, which a regeneration may change."""
    return re.sub(r"\s+", " ", re.sub(r"\(.*|\d+(\.\d+)?", "", line[4:])).strip()


def _blocks(text: str) -> dict[str, list[str]]:
    """The section split at its '### ' headings, keyed by ``_heading_key`` (the text before the first one under '')."""
    blocks: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.split("\n"):
        if line.startswith("### "):
            current = _heading_key(line)
            blocks[current] = []
        blocks[current].append(line)
    return blocks


KEY_CELLS = {"| run | sampler |": 2, "| run | generator |": 2, "| model | recipe | derivative |": 3}
"""Tables whose rows are identified by more than their first cell, by the start of their header."""


def _row_key(line: str, header: str) -> str:
    """A table row's identity: its first cell, or its first KEY_CELLS cells."""
    cells = [c.strip() for c in line.strip("|").split("|")]
    return " | ".join(cells[:next((n for h, n in KEY_CELLS.items() if header.startswith(h)), 1)])


def carry_forward(new: str, old: str) -> tuple[str, list[tuple[str, str]]]:
    """``new`` with the rows and '### ' sections of ``old`` that ``new`` lacks put back (a row after its
    old predecessor, a section at its old position), and what was carried as (kind, key) pairs, kind
    being "section" or the first column's name of the row's table. A row is kept only under the same
    table header, so a changed table is never mixed with an old one."""
    new_blocks, old_blocks, carried = _blocks(new), _blocks(old), []
    for heading, old_lines in old_blocks.items():
        if heading not in new_blocks:
            carried.append(("section", old_lines[0][4:].split(" (")[0]))
            continue
        lines, header = new_blocks[heading], None
        for i, line in enumerate(old_lines):
            if not line.startswith("|"):
                header = None
                continue
            if header is None:
                header = line
                continue
            if line.startswith("|---") or header not in lines:
                continue
            start = lines.index(header)
            end = next((j for j in range(start, len(lines)) if not lines[j].startswith("|")), len(lines))
            keys = {_row_key(l, header) for l in lines[start + 2:end]}
            if _row_key(line, header) not in keys:
                prev = old_lines[i - 1]
                at = lines.index(prev, start) + 1 if prev in lines[start:end] else end
                lines.insert(max(at, start + 2), line)
                carried.append((header.strip("|").split("|")[0].strip(), _row_key(line, header)))
    order = [h for h in old_blocks if h] + [h for h in new_blocks if h and h not in old_blocks]
    merged = {h: new_blocks.get(h, old_blocks.get(h)) for h in order}
    return "\n\n".join("\n".join(block).strip("\n") for block in [new_blocks[""], *(merged[h] for h in order)]), carried


def main() -> None:
    text = README.read_text()
    match = re.search(r"<!-- results:start -->\n(.*?)\n<!-- results:end -->", text, flags=re.S)
    if match is None:
        sys.exit("README.md has no results markers")
    body, carried = carry_forward(section(), match.group(1))
    if carried:
        runs = list(dict.fromkeys(key.split(" | ")[0] for kind, key in carried if kind == "run"))
        sections = [key for kind, key in carried if kind == "section"]
        others = sum(kind not in ("run", "section") for kind, _ in carried)
        body = body.replace("\n", "\n\nCarried unchanged from the section as last generated, their sources being in neither runs/ nor results/: "
                            f"the runs {', '.join(runs) or 'none'}; the sections {', '.join(sections) or 'none'}; "
                            f"and {others} rows of the bars, claims and benchmark tables.\n", 1)
    README.write_text(text[:match.start(1)] + body + text[match.end(1):])
    print(body)


if __name__ == "__main__":
    main()
