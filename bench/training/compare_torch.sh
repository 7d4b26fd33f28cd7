#!/usr/bin/env bash
# Training tokens/s of dss against PyTorch (Debian's python3-torch, float32, CPU) on the same model shape, batch and
# sequence length, with 1 and 2 threads, alternating the two engines so that machine drift hits both alike.
#   bench/training/compare_torch.sh [STEPS] [MODEL_JSON] [BATCH] [SEQ]
# Needs: apt-get install python3-torch libopenblas0-pthread (without an optimised BLAS, Debian's torch multiplies
# matrices with the reference BLAS, ~10x slower). Prints one JSON line per run and a table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
steps=${1:-4}; model=${2:-$here/model-small.json}; batch=${3:-8}; seq=${4:-128}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dotnet build "$root/src/DeepSeekSharp.Cli" -c Release -v q -nologo >/dev/null
dss="$root/src/DeepSeekSharp.Cli/bin/Release/net10.0/dss"
python3 "$here/synthetic_corpus.py" --documents 20000 > "$work/corpus.txt"
"$dss" prepare-data "$work/corpus.txt" --out "$work/corpus.tokens" >/dev/null
results=()
for threads in 1 2; do
  cat > "$work/train-$threads.json" <<JSON
{ "model": $(cat "$model"), "data": ["corpus.tokens"], "out": "run-$threads", "batch_size": $batch, "seq_len": $seq,
  "steps": $((steps + 1)), "warmup_steps": 1, "eval_interval": 100000, "checkpoint_interval": 100000, "threads": $threads }
JSON
  "$dss" train --config "$work/train-$threads.json" >/dev/null 2>&1
  # step 1 includes first-touch of every buffer: average the steps after it
  tps=$(awk -F, 'NR > 2 { s += $9; n++ } END { printf "%.1f", s / n }' "$work/run-$threads/metrics.csv")
  line="{\"engine\": \"dss\", \"threads\": $threads, \"batch\": $batch, \"seq_len\": $seq, \"steps\": $steps, \"tokens_per_s\": $tps}"
  echo "$line"; results+=("$line")
  line=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads /usr/bin/python3 "$here/torch_reference.py" bench "$model" \
         --batch "$batch" --seq "$seq" --steps "$steps" --threads "$threads")
  echo "$line"; results+=("$line")
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
print("| threads | dss tokens/s | PyTorch tokens/s | dss / PyTorch |")
print("| --- | --- | --- | --- |")
for t in (1, 2):
    d = next(r for r in rows if r["engine"] == "dss" and r["threads"] == t)["tokens_per_s"]
    p = next(r for r in rows if r["engine"] == "pytorch" and r["threads"] == t)["tokens_per_s"]
    print(f"| {t} | {d:.0f} | {p:.0f} | {d / p:.1f}x |")
'
