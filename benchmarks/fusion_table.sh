#!/usr/bin/env bash
# Single-task vs multi-task vs merged vs ensembled, side by side, on GLUE tasks + CoNLL-2003: the whole
# mtfuse workflow through its CLI, ending in `mtfuse compare` (JSON + markdown + plots).
#   bash benchmarks/fusion_table.sh                      # CPU-sized: 4 tasks, seeded subsets, short runs
#   TASKS="cola sst2 mrpc rte wnli stsb conll" SUBSET="" STEPS=2000 bash benchmarks/fusion_table.sh   # GPU
# Environment: DATA (../shared/data), WORK (benchmarks/runs/fusion), TASKS, SUBSET (overrides), STEPS (per
# single-task run; the multi-task runs take STEPS x number of tasks), MERGES (merge methods to try).
set -euo pipefail
cd "$(dirname "$0")/.."
M=${MTFUSE:-.venv/bin/mtfuse}
DATA=${DATA:-../shared/data}
WORK=${WORK:-benchmarks/runs/fusion}
TASKS=${TASKS:-"sst2 mrpc stsb conll"}
SUBSET=${SUBSET-"subset.train=512 subset.eval=200"}
STEPS=${STEPS:-64}
MERGES=${MERGES:-"linear task_arithmetic ties dare_ties model_stock fisher regmean"}
mkdir -p "$WORK"
n=$(echo $TASKS | wc -w)
only="only_tasks=[$(echo $TASKS | tr ' ' ',')]"
lens=""; for t in $TASKS; do lens="$lens tasks.$t.max_length=64"; done
common="data_dir=$DATA $SUBSET $lens train.batch_size=16 train.lr=5e-5 train.progress=false train.diagnostics=false"

st_runs=""
for t in $TASKS; do
  $M train configs/glue.yaml only_tasks=[$t] $common train.max_steps=$STEPS --output "$WORK/st-$t" --overwrite
  st_runs="$st_runs $WORK/st-$t"
done
for seed in 42 1; do
  $M train configs/glue.yaml "$only" $common train.max_steps=$((STEPS * n)) train.seed=$seed \
     --output "$WORK/mtl-s$seed" --overwrite
done
merged=""
for m in $MERGES; do
  extra=""; case $m in ties|dare_ties) extra="density=0.5";; esac
  $M merge $st_runs --method $m $extra --output "$WORK/merge-$m" --overwrite
  merged="$merged $WORK/merge-$m"
done
$M ensemble "$WORK/mtl-s42" "$WORK/mtl-s1" --method weighted_nll --output "$WORK/ens-mtl" --overwrite
$M ensemble "$WORK/mtl-s42" "$WORK/mtl-s1" --method caruana --output "$WORK/ens-caruana" --overwrite
$M stack "$WORK/mtl-s42" "$WORK/mtl-s1" --output "$WORK/stack-mtl" --overwrite
$M compare $st_runs "$WORK/mtl-s42" "$WORK/mtl-s1" $merged "$WORK/ens-mtl" "$WORK/ens-caruana" "$WORK/stack-mtl" \
   --output "$WORK/compare" --overwrite
mkdir -p benchmarks/results
cp "$WORK/compare/compare.md" benchmarks/results/fusion_table-compare.md
cp "$WORK/compare/compare.json" benchmarks/results/fusion_table-compare.json
echo "table: benchmarks/results/fusion_table-compare.md"
