#!/bin/sh
# usage: eval.sh TAG SET...   (SET: val oldval newval laterval later2val test oldtest newtest)
tag=$1; shift
M="${MODEL_ARGS:---model runs/tdn-catalysis2-v8/best.safetensors --uncertainty runs/tdn-catalysis2-v8/uncertainty.json} --second-model tdn-catalysis-sibling-2 --threads 1"
C2="--data datasets/catalysis2-sevennet0-snap1486"
for s in "$@"; do
  case $s in
    val) a="$C2 --split-file runs/tdn-catalysis2-v4/split-coverage2.json --split val";;
    test) a="$C2 --split-file runs/tdn-catalysis2-v4/split-coverage2.json --split test";;
    oldval) a="--data datasets/catalysis-sevennet0 --split-file runs/tdn-catalysis-v3/split.json --split val";;
    oldtest) a="--data datasets/catalysis-sevennet0 --split-file runs/tdn-catalysis-v3/split.json --split test";;
    newval) a="$C2 --split-file runs/tdn-catalysis2-sibling2/split-coverage2.json --split val --systems $(cat runs/tdn-catalysis2-v5/newval.systems)";;
    newtest) a="$C2 --split-file runs/tdn-catalysis2-sibling2/split-coverage2-1486.json --split test --systems $(cat runs/tdn-catalysis2-v5/newtest.systems)";;
    laterval) a="$C2 --split-file runs/tdn-catalysis2-sibling2/split-coverage2-later.json --split val";;
    later34val) a="--data datasets/catalysis2-sevennet0-snap2042 --split-file runs/tdn-catalysis2-v6/split-coverage2.json --split val --systems $(cat runs/tdn-catalysis2-v6/later34val.systems)";;
    later5val) a="--data datasets/catalysis2-sevennet0-snap2318 --split-file runs/tdn-catalysis2-v6/split-coverage2-later5.json --split val";;
    quarter) a="--data datasets/catalysis2q-sevennet0-snap153 --split all --max-systems 60";;
    later2val) a="--data datasets/catalysis2-sevennet0-snap1706 --split-file runs/tdn-catalysis2-v5/split-coverage2-later2.json --split val";;
  esac
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adsorption_quality.py $M $a --out benchmarks/results/adsorption_quality_c2_$tag-$s.json > runs/tdn-catalysis2-v8/eval-$tag-$s.log 2>&1
done
