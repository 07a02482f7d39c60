#!/usr/bin/env bash
# The demo-sizing scan (docs/experiments.md, "Demo sizing"): train each configuration with `privtune train`
# (one thread, as a demo worker runs), then score it with scripts/demo_sizing.py.
#
#   scripts/demo_sizing_scan.sh DATA OUTDIR "method batch lr epochs [extra options]" ...
#
# e.g. scripts/demo_sizing_scan.sh data/d400 scan "dp-lora 128 2e-2 3" "lora 16 1e-2 3"
# Runs are named OUTDIR/<method>-b<batch>-lr<lr>-ep<epochs>; an existing finished run is scored, not retrained.
# Appends every row to OUTDIR/scan.jsonl and the CPU seconds of each training to OUTDIR/cpu.tsv.
set -euo pipefail
data=$1; out=$2; shift 2
py=${PYTHON:-python}
mkdir -p "$out"
for cfg in "$@"; do
  read -r method batch lr epochs extra <<<"$cfg"
  name="$method-b$batch-lr$lr-ep$epochs${extra:+-$(echo "$extra" | tr -c 'a-zA-Z0-9.\n' '_')}"
  run="$out/$name"
  if [ ! -f "$run/model/privtune.json" ]; then
    rm -rf "$run"
    dp=(); case $method in dp-*) dp=(--epsilon 8 --physical-batch-size 32);; esac
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 /usr/bin/time -f "$name\t%U\t%S\t%e" -a -o "$out/cpu.tsv" \
      "$py" -m privtune train --data "$data" --method "$method" --batch-size "$batch" --lr "$lr" \
      --epochs "$epochs" "${dp[@]}" --out "$run" $extra > "$run.log" 2>&1 || { echo "failed: $name"; continue; }
  fi
  OMP_NUM_THREADS=1 "$py" scripts/demo_sizing.py --data "$data" "$run" --jsonl "$out/scan.jsonl" | tail -1
done
