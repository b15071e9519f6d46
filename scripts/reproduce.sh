#!/usr/bin/env bash
# Run every default recipe and benchmark, then regenerate the README's results section.
# Several hours on 2 CPU cores (each run <= ~10 min). The peer benchmark needs: pip install --no-deps torchcfm flow_matching pot
set -euo pipefail
cd "$(dirname "$0")/.."
IMF_V0="--aux-head-depth 0 --width 512 --t-min 0 --t-max 1"  # imf's defaults before its v-head got blocks of its own (recipes/imf.py)
python recipes/fm.py --out runs/fm
python recipes/fm.py --data checkerboard --out runs/fm_checkerboard
python recipes/meanflow.py --out runs/meanflow   # the default (x-prediction on 2D), run at one thread beside another job
for seed in 1 2; do python recipes/meanflow.py --seed $seed --out runs/meanflow_x_seed$seed; done
OMP_NUM_THREADS=2 python recipes/meanflow.py --prediction v --out runs/meanflow_v   # the 2D default before x-prediction
python recipes/meanflow.py --p 1 --uniform-fraction 0 --lr-decay 0 --fourier-features 0 --steps 12000 --no-compile --prediction v --out runs/meanflow_p1
for p in 0 0.5; do python recipes/meanflow.py --p $p --uniform-fraction 0 --lr-decay 0 --fourier-features 0 --steps 12000 --no-compile --prediction v --out runs/meanflow_p$p; done
python recipes/meanflow.py --p 1 --uniform-fraction 0 --lr-decay 0.3 --fourier-features 0 --steps 12000 --no-compile --prediction v --out runs/meanflow_lr_decay
python recipes/meanflow.py --p 1 --uniform-fraction 0 --lr-decay 0 --fourier-features 0 --steps 4000 --equal-fraction 0.25 --no-compile --prediction v --out runs/meanflow_4k_equal0.25
for u in 0.5 1; do python recipes/meanflow.py --p 1 --lr-decay 0 --fourier-features 0 --steps 4000 --uniform-fraction $u --no-compile --prediction v --out runs/meanflow_4k_uniform$u; done
python recipes/meanflow.py --p 1 --uniform-fraction 0 --lr-decay 0 --fourier-features 64 --fourier-scale 1 --steps 12000 --no-compile --prediction v --out runs/meanflow_fourier64
python recipes/meanflow.py --fourier-features 0 --steps 12000 --no-compile --prediction v --out runs/meanflow_p0_uniform1_lr_decay
OMP_NUM_THREADS=2 python recipes/meanflow.py --steps 8000 --no-compile --prediction v --out runs/meanflow_8k
for seed in 1 2; do python recipes/meanflow.py --steps 8000 --no-compile --seed $seed --prediction v --out runs/meanflow_8k_seed$seed; done
for seed in 1 2; do python recipes/meanflow.py --seed $seed --prediction v --out runs/meanflow_seed$seed; done
OMP_NUM_THREADS=2 python recipes/meanflow.py --steps 12000 --no-compile --prediction v --out runs/meanflow_12k
OMP_NUM_THREADS=2 python recipes/meanflow.py --steps 15000 --prediction v --out runs/meanflow_15k
for seed in 1 2; do python recipes/meanflow.py --steps 12000 --seed $seed --no-compile --prediction v --out runs/meanflow_12k_seed$seed; done
python recipes/meanflow.py --seed 1 --equal-fraction 0.5 --steps 8000 --no-compile --prediction v --out runs/meanflow_seed1_equal0.5
python recipes/meanflow.py --seed 1 --equal-fraction 0.25 --steps 8000 --no-compile --prediction v --out runs/meanflow_seed1_equal0.25
python recipes/meanflow.py --seed 1 --lr 2e-3 --steps 8000 --no-compile --prediction v --out runs/meanflow_seed1_lr2e-3
python recipes/meanflow.py --seed 1 --ema 0.9995 --steps 8000 --no-compile --prediction v --out runs/meanflow_seed1_ema0.9995
python recipes/meanflow.py --seed 1 --p 0.5 --steps 8000 --no-compile --prediction v --out runs/meanflow_seed1_p0.5
python recipes/meanflow.py --seed 1 --derivative fd --steps 12000 --no-compile --prediction v --out runs/meanflow_seed1_fd_12k
python recipes/meanflow.py --seed 1 --derivative fd --width 128 --steps 20000 --no-compile --prediction v --out runs/meanflow_seed1_fd_w128_20k
python recipes/meanflow.py --fourier-features 0 --equal-fraction 0.5 --steps 12000 --no-compile --prediction v --out runs/meanflow_p0_uniform1_lr_decay_equal0.5
python scripts/flow_map_error.py runs/meanflow_v runs/meanflow_seed1 runs/meanflow_seed2 runs/meanflow runs/meanflow_x_seed1 runs/meanflow_x_seed2 --json runs/flow_map_error.json
for seed in 0 1; do python recipes/meanflow.py --batch 512 --steps 8000 --seed $seed --prediction v --out runs/meanflow_b512_8k_seed$seed; done
python recipes/meanflow.py --steps 16000 --prediction v --out runs/meanflow_16k   # both ran with a fused Adam step (rounding differs)
python recipes/meanflow.py --steps 16000 --seed 1 --prediction v --out runs/meanflow_16k_seed1
python recipes/meanflow.py --seed 1 --fourier-scale 2 --prediction v --out runs/meanflow_seed1_fourier_scale2
python recipes/uaimf.py --ema 0.9995 --out runs/uaimf_ema0.9995
python recipes/alphaflow.py --omega 1 --kappa 0 --ema 0.9995 --alpha-end 1 --p 1 --lr-decay 0 --out runs/alphaflow_no_cfg_ema0.9995
python recipes/pmf.py --out runs/pmf
# the defaults before their step counts were cut to fit 10 minutes (bench/default_wall_time.py), and the comparison runs made at those counts
python recipes/pmf.py --derivative jvp --steps 7000 --out runs/pmf_7k
python recipes/imf.py $IMF_V0 --steps 7000 --out runs/imf_7k
python recipes/tvm.py --steps 5000 --out runs/tvm_5k
python recipes/dmf.py --steps 4000 --loss cauchy --grad-clip 0 --out runs/dmf_4k
python recipes/scm.py --steps 6000 --out runs/scm_6k
for w in 1.25 1.5; do rm -rf runs/pmf_w$w && cp -r runs/pmf_7k runs/pmf_w$w && python recipes/pmf.py --derivative jvp --steps 7000 --out runs/pmf_w$w --resume --omega $w; done
python recipes/pmf.py --derivative jvp --steps 7000 --p 1 --out runs/pmf_adaptive
rm -rf runs/pmf_adaptive_w1.5 && cp -r runs/pmf_adaptive runs/pmf_adaptive_w1.5 && python recipes/pmf.py --derivative jvp --steps 7000 --p 1 --out runs/pmf_adaptive_w1.5 --resume --omega 1.5
python recipes/pmf.py --derivative jvp --prediction v --out runs/pmf_v
python recipes/pmf.py --derivative jvp --out runs/pmf_jvp
python recipes/pmf.py --derivative jvp --prediction eps --out runs/pmf_eps
python recipes/pmf.py --steps 7000 --out runs/pmf_fd_7k
python recipes/uaimf.py --derivative fd --out runs/uaimf_fd
python recipes/dmf.py --derivative fd --steps 6500 --loss cauchy --grad-clip 0 --out runs/dmf_fd_6500
python recipes/pmf.py --derivative jvp --width 384 --steps 8000 --out runs/pmf_w384_8k
python recipes/alphaflow.py --steps 10000 --alpha-end 1 --p 1 --lr-decay 0 --out runs/alphaflow_10k
python recipes/alphaflow.py --beta2 0.95 --alpha-end 1 --p 1 --lr-decay 0 --out runs/alphaflow_beta2_0.95
python recipes/alphaflow.py --prediction x --alpha-end 1 --p 1 --lr-decay 0 --out runs/alphaflow_x
python recipes/alphaflow.py --prediction x --p 0 --alpha-end 1 --lr-decay 0 --out runs/alphaflow_x_p0
python recipes/dmf.py --loss cauchy --grad-clip 0 --out runs/dmf_cauchy   # the default before the squared error (the paper's loss)
for seed in 1 2; do python recipes/dmf.py --seed $seed --out runs/dmf_seed$seed; done
python recipes/dmf.py --grad-clip 0 --out runs/dmf_no_clip   # the squared error without clipping: seed 0, and seed 1, which diverged
python recipes/dmf.py --grad-clip 0 --seed 1 --out runs/dmf_seed1_no_clip
python recipes/dmf.py --grad-clip 0 --lr 2e-4 --seed 1 --out runs/dmf_seed1_lr2e-4
python recipes/uaimf.py --p 0 --grad-clip 1.5 --out runs/uaimf_p0_clip   # the plain squared error with gradient clipping
python recipes/alphaflow.py --p 0 --grad-clip 1.5 --alpha-end 1 --lr-decay 0 --out runs/alphaflow_p0_clip
python recipes/alphaflow.py --alpha-start 0.5 --alpha-end 0.83 --p 1 --lr-decay 0 --out runs/alphaflow_xl_schedule   # the paper's XL curriculum window
python recipes/alphaflow.py --alpha-end 0.5 --p 1 --lr-decay 0 --out runs/alphaflow_end0.5   # the curriculum over the first half, MeanFlow after
python recipes/alphaflow.py --alpha-end 1 --p 1 --lr-decay 0 --out runs/alphaflow_p1_alpha_end1   # the default before p = 0.5, lr decay and --alpha-end 0.5
python recipes/alphaflow.py --seed 1 --out runs/alphaflow_seed1   # the default on seeds 1 and 2
python recipes/alphaflow.py --seed 2 --out runs/alphaflow_seed2
python recipes/alphaflow.py --grad-clip 10 --out runs/alphaflow_clip10   # clipping at 10: it acted on 1 step of 7000
python recipes/alphaflow.py --grad-clip 10 --seed 1 --out runs/alphaflow_seed1_clip10
for k in 1 2; do python recipes/meanflow.py --data digits --steps 7000 --batch 128 --p 0.5 --lr-decay 0.3 --omega 1 --kappa 0 --seed $k --out runs/meanflow_digits_p0.5_lr_decay_no_cfg_seed$k; done
python scripts/history_stats.py runs/alphaflow_clip10 runs/alphaflow_seed1_clip10 --key grad_norm --above 10   # how often the clip acted
python scripts/history_stats.py runs/alphaflow_p0_clip --key grad_norm --above 1.5
python scripts/history_stats.py runs/alphaflow runs/alphaflow_seed1 --key mse --windows 0 1000 2500 3500 4900 6000 7000   # seed 1's spike
python recipes/imf.py $IMF_V0 --prediction x --no-clipped-target --out runs/imf_x   # x-prediction heads, as pMF, regressed onto eps - x
python recipes/imf.py $IMF_V0 --omega-max 1 --out runs/imf_omega_max1   # no training-time guidance
python recipes/imf.py $IMF_V0 --beta2 0.999 --out runs/imf_beta2_0.999   # Adam's default beta2
python recipes/uaimf.py --no-gap-weight --out runs/uaimf_no_gap_weight   # DTD only
for k in 0 1; do python recipes/uaimf.py --equal-fraction 0.5 --seed $k --out runs/uaimf_equal0.5_seed$k; done
python recipes/imf.py $IMF_V0 --omega-max 1 --lr-decay 0.3 --out runs/imf_no_cfg_lr_decay   # MeanFlow's winning settings on imf
python recipes/imf.py $IMF_V0 --omega-max 1 --p 0.5 --lr-decay 0.3 --out runs/imf_no_cfg_p0.5_lr_decay
python recipes/imf.py $IMF_V0 --t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort --lr-decay 0.3 --out runs/imf_pmf_times   # pMF's times and lr decay
python recipes/imf.py $IMF_V0 --t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort --lr-decay 0.3 --prediction x --no-clipped-target --out runs/imf_pmf_times_x
python recipes/imf.py $IMF_V0 --seed 1 --out runs/imf_shared_trunk_seed1   # v0 on seed 1
python recipes/imf.py $IMF_V0 --out runs/imf_shared_trunk   # v0, the default before
python recipes/imf.py $IMF_V0 --seed 2 --out runs/imf_shared_trunk_seed2   # v0 on seed 2
python recipes/imf.py $IMF_V0 --no-interval --out runs/imf_no_interval   # guidance over [0, 1] on every row
python recipes/imf.py $IMF_V0 --no-interval --t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort --lr-decay 0.3 --prediction x --no-clipped-target --out runs/imf_pmf_times_x_no_interval
python recipes/imf.py $IMF_V0 --t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort --lr-decay 0.3 --prediction x --out runs/imf_pmf_times_x_clipped_target   # x heads onto (z - x)/clip(t)
python recipes/imf.py $IMF_V0 --no-interval --t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort --lr-decay 0.3 --prediction x --out runs/imf_pmf_times_x_no_interval_clipped_target
python recipes/imf.py $IMF_V0 --seed 1 --t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort --lr-decay 0.3 --prediction x --out runs/imf_pmf_times_x_clipped_target_seed1
python recipes/imf.py $IMF_V0 --seed 1 --no-interval --t-mean 0 --t-std 0.8 --uniform-fraction 0.1 --equal-before-sort --lr-decay 0.3 --prediction x --out runs/imf_pmf_times_x_no_interval_clipped_target_seed1
# what separates imf from MeanFlow on digits: the tangent, the v-head's loss weight, beta2, and MeanFlow at imf's settings
python recipes/imf.py $IMF_V0 --tangent target --out runs/imf_tangent_target
python recipes/imf.py $IMF_V0 --v-weight 0.1 --out runs/imf_v_weight0.1
python recipes/imf.py $IMF_V0 --v-weight 0.1 --seed 1 --out runs/imf_v_weight0.1_seed1
python recipes/imf.py $IMF_V0 --omega-max 1 --beta2 0.999 --out runs/imf_no_cfg_beta2_0.999
python recipes/imf.py $IMF_V0 --omega-max 1 --tangent target --beta2 0.999 --out runs/imf_no_cfg_tangent_target_beta2_0.999
python recipes/imf.py $IMF_V0 --omega-max 1 --no-interval --tangent target --beta2 0.999 --out runs/imf_no_cfg_no_interval_tangent_target_beta2_0.999
python recipes/imf.py $IMF_V0 --omega-max 1 --no-interval --tangent target --beta2 0.999 --v-weight 0 --out runs/imf_no_cfg_no_interval_tangent_target_beta2_0.999_v_weight0
for k in 2 3 4; do python recipes/imf.py $IMF_V0 --aux-head-depth $k --out runs/imf_aux_head_depth$k; done
python recipes/imf.py $IMF_V0 --aux-head-depth 4 --seed 1 --out runs/imf_aux_head_depth4_seed1
python recipes/imf.py $IMF_V0 --aux-head-depth 4 --width 384 --out runs/imf_aux_head_depth4_w384
python recipes/imf.py $IMF_V0 --omega-max 1 --no-interval --tangent target --beta2 0.999 --aux-head-depth 4 --out runs/imf_no_cfg_no_interval_tangent_target_beta2_0.999_aux_head_depth4
python recipes/meanflow.py --data digits --steps 5000 --batch 128 --p 0 --omega 1 --kappa 0 --equal-fraction 0.5 --out runs/meanflow_digits_imf_settings
python recipes/imf.py $IMF_V0 --drop-on-equal --out runs/imf_drop_on_equal
python recipes/imf.py $IMF_V0 --drop-on-equal --seed 1 --out runs/imf_drop_on_equal_seed1
for w in 2 8; do python recipes/imf.py $IMF_V0 --omega-max $w --out runs/imf_omega_max$w; done
python recipes/uaimf.py --drop-on-equal --out runs/uaimf_drop_on_equal
for seed in 1 2; do python recipes/uaimf.py --drop-on-equal --seed $seed --out runs/uaimf_drop_on_equal_seed$seed; done
python recipes/meanflow.py --data digits --steps 7000 --batch 128 --p 0.5 --lr-decay 0.3 --omega 1 --kappa 0 --drop-on-equal --out runs/meanflow_digits_p0.5_lr_decay_no_cfg_drop_on_equal
python recipes/imf.py --width 512 --steps 3600 --out runs/imf_aux_head_depth4_3600   # the default's k = 4 and interval, width 512
for seed in 1 2 3 4 5; do python recipes/imf.py --seed $seed --out runs/imf_seed$seed; done   # the default on seeds 1 to 5
python recipes/imf.py --lr-decay 0.3 --out runs/imf_lr_decay0.3_k4 && python recipes/imf.py --lr-decay 0.3 --seed 1 --out runs/imf_lr_decay0.3_k4_seed1
python recipes/imf.py --beta2 0.9 --out runs/imf_beta2_0.9 && python recipes/imf.py --beta2 0.9 --seed 1 --out runs/imf_beta2_0.9_seed1
for ema in 0.9995 0.998; do python recipes/imf.py --ema $ema --out runs/imf_ema$ema && python recipes/imf.py --ema $ema --seed 1 --out runs/imf_ema${ema}_seed1; done
python recipes/alphaflow.py --drop-on-equal --out runs/alphaflow_drop_on_equal
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --precondition --out runs/metaflow_precondition   # x_hat = c_skip z* + c_out G
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --precondition --lr-decay 0.3 --out runs/metaflow_precondition_lr_decay
python recipes/metaflow.py --consistency eulerian --posterior-points 10 --out runs/metaflow_p10   # the earlier default (Eulerian), each posterior figure over 10 conditioning states
# the same weights re-evaluated over 10 conditioning states
rm -rf runs/metaflow_precondition_p10 && cp -r runs/metaflow_precondition runs/metaflow_precondition_p10
python recipes/metaflow.py --consistency eulerian --precondition --resume --posterior-points 10 --out runs/metaflow_precondition_p10
rm -rf runs/metaflow_precondition_lr_decay_p10 && cp -r runs/metaflow_precondition_lr_decay runs/metaflow_precondition_lr_decay_p10
python recipes/metaflow.py --consistency eulerian --precondition --lr-decay 0.3 --resume --posterior-points 10 --out runs/metaflow_precondition_lr_decay_p10
python recipes/metaflow.py --consistency eulerian --precondition --power 1 --posterior-points 10 --out runs/metaflow_precondition_power1_p10
python recipes/metaflow.py --consistency eulerian --precondition --query-input --posterior-points 10 --out runs/metaflow_precondition_query_p10
python recipes/metaflow.py --consistency eulerian --precondition --steps 10000 --posterior-points 10 --out runs/metaflow_precondition_10k_p10
# Meta Flow Maps' default (the Lagrangian consistency; runs/metaflow comes from the defaults loop below) on seeds 1 and 2, and preconditioned
for seed in 1 2; do python recipes/metaflow.py --seed $seed --out runs/metaflow_seed$seed; done
python recipes/metaflow.py --precondition --out runs/metaflow_lagrangian_precondition
python recipes/dmf.py --decoupled-blocks 2 --loss cauchy --grad-clip 0 --out runs/dmf_k2
python recipes/dmf.py --lr 1e-3 --loss cauchy --grad-clip 0 --out runs/dmf_lr1e-3
for r in rectified_flow imf alphaflow uaimf dmf tvm jit cm scm freeflow metaflow drifting repa; do python recipes/$r.py; done
# comparison runs behind the README's paper-claims table
python recipes/uaimf.py --p 1 --lr-decay 0 --omega 1.5 --kappa 0.5 --out runs/uaimf_paper
for seed in 1 2; do python recipes/uaimf.py --seed $seed --out runs/uaimf_seed$seed; done
OMP_NUM_THREADS=2 python recipes/uaimf.py --out runs/uaimf_2threads
OMP_NUM_THREADS=2 python recipes/pmf.py --derivative jvp --out runs/pmf_2threads   # alone on an idle machine: the wall-clock projection's check
rm -rf runs/imf_w1.5 && cp -r runs/imf_7k runs/imf_w1.5 && python recipes/imf.py $IMF_V0 --steps 7000 --out runs/imf_w1.5 --resume --omega 1.5
python recipes/imf.py $IMF_V0 --steps 7000 --p 1 --omega 1.5 --lr-decay 0.3 --out runs/imf_adaptive_lr_decay
python recipes/imf.py $IMF_V0 --steps 7000 --lr-decay 0.3 --out runs/imf_lr_decay
python recipes/imf.py $IMF_V0 --p 0.5 --lr-decay 0.3 --out runs/imf_p0.5_lr_decay
python recipes/dmf.py --steps 4000 --omega 0 --loss cauchy --grad-clip 0 --out runs/dmf_no_guidance
python recipes/meanflow.py --data digits --steps 7000 --batch 128 --out runs/meanflow_digits
python recipes/meanflow.py --data digits --steps 7000 --batch 128 --omega 1 --kappa 0 --out runs/meanflow_digits_no_cfg
python recipes/meanflow.py --data digits --steps 7000 --batch 128 --omega 1 --kappa 0 --lr-decay 0.3 --out runs/meanflow_digits_no_cfg_lr_decay
python recipes/meanflow.py --data digits --steps 7000 --batch 128 --p 0.5 --lr-decay 0.3 --omega 1 --kappa 0 --out runs/meanflow_digits_p0.5_lr_decay_no_cfg
python recipes/alphaflow.py --p 0.5 --lr-decay 0.3 --omega 1 --kappa 0 --alpha-end 1 --out runs/alphaflow_p0.5_lr_decay_no_cfg
python recipes/uaimf.py --acceleration min_snr --out runs/uaimf_min_snr
for seed in 1 2; do python recipes/uaimf.py --acceleration min_snr --seed $seed --out runs/uaimf_min_snr_seed$seed; done
python recipes/alphaflow.py --omega 1 --kappa 0 --seed 1 --alpha-end 1 --p 1 --lr-decay 0 --out runs/alphaflow_no_cfg_seed1
python recipes/uaimf.py --p 1 --lr-decay 0 --out runs/uaimf_no_cfg
python recipes/uaimf.py --p 0 --lr-decay 0 --omega 1.5 --kappa 0.5 --out runs/uaimf_p0
python recipes/uaimf.py --p 0 --lr-decay 0 --out runs/uaimf_p0_no_cfg
python recipes/meanflow.py --data digits --steps 7000 --batch 128 --p 0 --omega 1 --kappa 0 --out runs/meanflow_digits_p0_no_cfg
python recipes/tvm.py --steps 5000 --no-cfg-weight --out runs/tvm_no_cfg_weight
python recipes/tvm.py --steps 5000 --cfg 1.5 --out runs/tvm_cfg1.5
for w in 1.0 2.0; do rm -rf runs/tvm_cfg$w && cp -r runs/tvm_5k runs/tvm_cfg$w && python recipes/tvm.py --steps 5000 --out runs/tvm_cfg$w --resume --cfg $w; done
python recipes/jit.py --prediction v --out runs/jit_v
python recipes/cm.py --mode ct --out runs/cm_ct
python recipes/cm.py --mode ict --out runs/cm_ict
python recipes/cm.py --no-teacher-init --out runs/cm_fresh
python recipes/scm.py --steps 6000 --no-tangent-norm --tangent-warmup 0 --out runs/scm_unstabilised
python recipes/scm.py --steps 6000 --no-teacher-init --out runs/scm_fresh
python recipes/scm.py --steps 6000 --no-teacher-init --no-tangent-norm --tangent-warmup 0 --out runs/scm_fresh_unstabilised
python recipes/freeflow.py --no-correction --out runs/freeflow_no_correction
python recipes/freeflow.py --steps 4000 --batch 128 --derivative jvp --out runs/freeflow_4k_lr_decay
python recipes/freeflow.py --steps 4000 --batch 128 --derivative jvp --p 0.5 --out runs/freeflow_4k_p0.5_lr_decay
python recipes/freeflow.py --steps 2000 --batch 128 --derivative jvp --lr 3e-4 --out runs/freeflow_lr3e-4_lr_decay
python recipes/freeflow.py --steps 4000 --out runs/freeflow_b64_fd_4k_lr_decay
python recipes/freeflow.py --steps 2000 --batch 128 --derivative jvp --lr-decay 0 --out runs/freeflow_2k
python recipes/freeflow.py --steps 4000 --batch 128 --derivative jvp --lr 1.5e-4 --out runs/freeflow_4k_lr1.5e-4_lr_decay
python recipes/dmf.py --steps 4000 --lr-decay 0.3 --loss cauchy --grad-clip 0 --out runs/dmf_lr_decay
python recipes/drifting.py --attraction 1.5 --out runs/drifting_attraction1.5
python recipes/drifting.py --data checkerboard --steps 4000 --batch 256 --lr 1e-3 --out runs/drifting_checkerboard
python recipes/drifting.py --data checkerboard --steps 4000 --batch 256 --lr 1e-3 --attraction 1.5 --out runs/drifting_checkerboard_attraction1.5
python recipes/cm.py --data checkerboard --out runs/cm_checkerboard
python recipes/cm.py --data checkerboard --no-teacher-init --out runs/cm_fresh_checkerboard
python recipes/freeflow.py --data checkerboard --steps 6000 --batch 128 --lr 3e-4 --lr-decay 0 --derivative jvp --out runs/freeflow_checkerboard
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --no-cond-input --p-diagonal 0.5 --p-consistency 1 --lr-decay 0 --power 2 --fourier-features 64 --out runs/metaflow_fourier64
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --no-cond-input --p-diagonal 0 --p-consistency 0 --lr-decay 0.3 --power 2 --out runs/metaflow_p0_lr_decay
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --cond-input --p-diagonal 0 --p-consistency 0 --lr-decay 0.3 --power 2 --out runs/metaflow_cond_input_p0_lr_decay
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --cond-input --p-diagonal 0.5 --p-consistency 1 --lr-decay 0 --power 1 --out runs/metaflow_cond_input_power1
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --prediction x --out runs/metaflow_x
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --prediction x --power 1 --out runs/metaflow_x_power1
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --query-input --out runs/metaflow_query
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --query-input --prediction x --out runs/metaflow_query_x
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --steps 8000 --out runs/metaflow_8k
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --query-input --p-diagonal 0 --p-consistency 0 --out runs/metaflow_query_p0
python recipes/metaflow.py --consistency eulerian --posterior-points 3 --query-input --power 1 --out runs/metaflow_query_power1
# studies (each writes its own table; the latent_forcing and unified_latents default runs are members of theirs)
python scripts/repa_steps_to_fd.py
python scripts/latent_forcing_ablation.py
python scripts/unified_latents_sweep.py
python scripts/jit_embedding_dimension.py
for o in cascaded joint; do  # the two-stream ablation runs re-evaluated with the pixels-given-the-data's-latent diagnostic
  rm -rf runs/latent_forcing_diag/$o && mkdir -p runs/latent_forcing_diag && cp -r runs/latent_forcing_ablation/$o runs/latent_forcing_diag/
  python recipes/latent_forcing.py --order $o --steps 2000 --seed 0 --out runs/latent_forcing_diag/$o --resume
done
python recipes/latent_forcing.py --latent-channels 4 --out runs/latent_forcing_k4
python recipes/latent_forcing.py --latent-channels 2 --out runs/latent_forcing_k2
python bench/step_cost.py --json bench/out/step_cost.json
python bench/jvp_attention.py --json bench/out/jvp_attention.json
python bench/recipe_step_cost.py --json bench/out/recipe_step_cost.json
OMP_NUM_THREADS=2 python bench/recipe_step_cost.py --recipes alphaflow --models mlp --json bench/out/recipe_step_cost_mlp.json   # re-timed after its default changed
OMP_NUM_THREADS=1 python bench/recipe_step_cost.py --recipes metaflow --models mlp --short 5 --long 25 --json bench/out/recipe_step_cost.json --append   # re-timed after its default changed
OMP_NUM_THREADS=2 python bench/compiled_step.py --json bench/out/compiled_step.json
OMP_NUM_THREADS=2 python bench/compiled_step.py --data digits --json bench/out/compiled_step_digits.json
OMP_NUM_THREADS=2 python bench/default_wall_time.py --json bench/out/default_wall_time.json  # alone on an idle machine
OMP_NUM_THREADS=2 python bench/default_wall_time.py --recipes imf "imf --aux-head-depth 0 --width 512" "imf --width 512" --long 420 --json bench/out/variant_wall_time.json  # idle machine
python scripts/fd_draws.py runs/fm runs/uaimf runs/pmf_7k runs/imf_7k runs/dmf_lr_decay runs/uaimf_seed1 runs/uaimf_seed2 runs/alphaflow_p1_alpha_end1 \
  runs/alphaflow_no_cfg_seed1 runs/meanflow_digits_p0.5_lr_decay_no_cfg runs/dmf_no_guidance runs/tvm runs/imf runs/dmf runs/freeflow_2k \
  runs/freeflow runs/freeflow_b64_fd_4k_lr_decay runs/pmf_v runs/imf_p0.5_lr_decay runs/imf_lr_decay runs/freeflow_4k_lr_decay \
  runs/freeflow_no_correction runs/alphaflow_10k runs/dmf_k2 runs/dmf_lr1e-3 runs/pmf_w384_8k runs/pmf_fd_7k runs/pmf_jvp runs/pmf runs/uaimf_fd runs/dmf_fd_6500 runs/dmf_cauchy runs/dmf_seed1 runs/dmf_seed2 runs/dmf_no_clip runs/dmf_seed1_lr2e-4 runs/alphaflow runs/alphaflow_seed1 runs/alphaflow_seed2 runs/uaimf_no_gap_weight \
  runs/meanflow_digits_p0.5_lr_decay_no_cfg_seed1 runs/meanflow_digits_p0.5_lr_decay_no_cfg_seed2 runs/uaimf_equal0.5_seed0 runs/uaimf_equal0.5_seed1 runs/imf_pmf_times_x_no_interval_clipped_target \
  runs/imf_shared_trunk runs/imf_shared_trunk_seed1 runs/imf_aux_head_depth2 runs/imf_aux_head_depth3 runs/imf_aux_head_depth4 runs/imf_aux_head_depth4_seed1 runs/imf_aux_head_depth4_w384 \
  runs/imf_no_cfg_no_interval_tangent_target_beta2_0.999 runs/imf_no_cfg_no_interval_tangent_target_beta2_0.999_v_weight0 \
  runs/imf_no_cfg_no_interval_tangent_target_beta2_0.999_aux_head_depth4 runs/imf_drop_on_equal runs/imf_drop_on_equal_seed1 \
  runs/imf_omega_max2 runs/imf_omega_max8 runs/uaimf_drop_on_equal runs/uaimf_drop_on_equal_seed1 runs/uaimf_drop_on_equal_seed2 \
  runs/meanflow_digits_p0.5_lr_decay_no_cfg_drop_on_equal runs/imf_aux_head_depth4_3600 runs/imf_seed1 \
  runs/imf_seed2 runs/imf_seed3 runs/imf_shared_trunk_seed2 runs/imf_lr_decay0.3_k4 runs/imf_lr_decay0.3_k4_seed1 runs/imf_beta2_0.9 \
  runs/imf_beta2_0.9_seed1 runs/alphaflow_drop_on_equal runs/imf_ema0.9995 runs/imf_ema0.9995_seed1 runs/imf_ema0.998 runs/imf_ema0.998_seed1 \
  runs/imf_seed4 runs/imf_seed5 --json runs/fd_draws.json
for r in runs/imf_shared_trunk runs/imf_shared_trunk_seed1 runs/imf_shared_trunk_seed2 runs/imf_aux_head_depth4 runs/imf_aux_head_depth4_seed1 runs/imf_aux_head_depth2 runs/imf_aux_head_depth3 \
  runs/imf_omega_max2 runs/imf_omega_max8 runs/imf_drop_on_equal runs/imf_drop_on_equal_seed1 runs/imf_aux_head_depth4_w384 \
  runs/imf_no_cfg_no_interval_tangent_target_beta2_0.999_aux_head_depth4; do  # iMF's own sampling interval, at omega = 1
  python scripts/fd_draws.py $r --set t_min=0.4 --set t_max=0.65 --json runs/fd_draws_sampling.json
done
for w in 1.25 1.5; do  # the default sampled with guidance (its interval [0.4, 0.65])
  python scripts/fd_draws.py runs/imf runs/imf_seed1 runs/imf_seed2 runs/imf_seed3 --set omega=$w --json runs/fd_draws_sampling.json
done
if python -c "import torchcfm, flow_matching" 2>/dev/null; then
  python bench/fm_vs_peers.py --json bench/out/fm_vs_peers.json
fi
python scripts/results_table.py
