#!/usr/bin/env bash
# Run every default recipe and benchmark, then regenerate the README's results section.
# About 45 minutes on 2 CPU cores. The peer benchmark needs: pip install --no-deps torchcfm flow_matching pot
set -euo pipefail
cd "$(dirname "$0")/.."
python recipes/fm.py --out runs/fm
python recipes/fm.py --data checkerboard --out runs/fm_checkerboard
python recipes/meanflow.py --out runs/meanflow
python recipes/pmf.py --out runs/pmf
python bench/step_cost.py --json bench/out/step_cost.json
python bench/jvp_attention.py --json bench/out/jvp_attention.json
if python -c "import torchcfm, flow_matching" 2>/dev/null; then
  python bench/fm_vs_peers.py --json bench/out/fm_vs_peers.json
fi
python scripts/results_table.py
