#!/usr/bin/env bash
# The documented training run: a V3-shaped model (bench/training/model-small.json: hidden 256, 4 layers of which 3
# MoE with 16 experts, q-LoRA, one MTP module, the DeepSeek-V3 tokenizer's 129,280-token vocabulary; 71M parameters)
# trained on the synthetic corpus for STEPS steps (350 ≈ 20 minutes on 2 cores), with the auxiliary-loss-free bias
# rule on (GAMMA, default 0.001) or off (0). Writes OUT/metrics.csv, OUT/plots/*.png and checkpoints.
#   bench/training/synthetic_run.sh OUT [STEPS] [GAMMA]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
out=${1:?output folder}; steps=${2:-350}; gamma=${3:-0.001}
mkdir -p "$out"
dotnet build "$root/src/DeepSeekSharp.Cli" -c Release -v q -nologo >/dev/null
dss="$root/src/DeepSeekSharp.Cli/bin/Release/net10.0/dss"
[ -f "$out/corpus.tokens" ] || { python3 "$here/synthetic_corpus.py" --documents 20000 --seed 1 > "$out/corpus.txt"; "$dss" prepare-data "$out/corpus.txt" --out "$out/corpus.tokens"; }
cat > "$out/train.json" <<JSON
{
  "model": $(cat "$here/model-small.json"),
  "data": ["corpus.tokens"], "validation_fraction": 0.05, "out": "run",
  "batch_size": 8, "seq_len": 128, "steps": $steps,
  "lr": 0.002, "min_lr": 0.0002, "warmup_steps": 30, "grad_clip": 1.0,
  "mtp_lambda": 0.3, "balance_alpha": 0.0001, "bias_gamma": $gamma,
  "eval_interval": 25, "eval_batches": 4, "checkpoint_interval": 50, "keep_checkpoints": 1, "seed": 1
}
JSON
"$dss" train --config "$out/train.json"
