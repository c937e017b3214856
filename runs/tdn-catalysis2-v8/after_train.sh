#!/bin/sh
# wait for v8 training, fit its novelty summary, then the five validation sets, later34val and quarter on two cores
cd /work/main
while pgrep -f "tdn train configs/tdn-catalysis2-v8" >/dev/null; do sleep 30; done
OMP_NUM_THREADS=1 .venv/bin/python tools/make_uncertainty_sidecar.py runs/tdn-catalysis2-v8/best.safetensors \
  --out runs/tdn-catalysis2-v8/uncertainty.json --data datasets/catalysis-sevennet0 datasets/catalysis2-sevennet0-snap2497 datasets/catalysis2q-sevennet0-snap453 \
  --split-file runs/tdn-catalysis2-v8/split.json --threshold 1.0 --max-frames 12000 > runs/tdn-catalysis2-v8/sidecar.log 2>&1
sh runs/tdn-catalysis2-v8/eval.sh v8 later2val quarter &
sh runs/tdn-catalysis2-v8/eval.sh v8 val newval laterval oldval later34val
wait
echo done > runs/tdn-catalysis2-v8/eval.done
