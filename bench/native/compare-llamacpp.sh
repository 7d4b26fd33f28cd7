#!/usr/bin/env bash
# Alternates llama.cpp's llama-bench with `dss bench` on the same GGUF files, run by run, with the C read (read.c)
# before each pair, so all three see the same minutes on a host whose bandwidth drifts; prints each round and, per
# file and thread count, the medians, our speed over llama.cpp's and our decode's share of the C read.
#
#   bench/native/compare-llamacpp.sh [-r ROUNDS] [-t "2 1"] [-m tg|pp] [-n TOKENS] [-d DEPTH] FILE.gguf ...
#
#   -m tg  decode TOKENS tokens (default 128) after DEPTH cached positions (default 0): llama-bench -p 0 -n TOKENS -d DEPTH
#   -m pp  prefill a prompt of TOKENS tokens (default 512): llama-bench -p TOKENS -n 0
#
# llama-bench is $LLAMA_BENCH, else ~/.cache/llamacpp-anchor/bin/llama-bench (../shared/anchors/README.md builds it).
# Needs gcc with OpenMP and python3. Run from the repository root.
set -euo pipefail
usage() { echo "usage: $0 [-r ROUNDS] [-t \"2 1\"] [-m tg|pp] [-n TOKENS] [-d DEPTH] FILE.gguf ..." >&2; exit 2; }
rounds=3 threads="2 1" mode=tg tokens="" depth=0
while getopts "r:t:m:n:d:" o; do
    case $o in
        r) rounds=$OPTARG ;; t) threads=$OPTARG ;; m) mode=$OPTARG ;; n) tokens=$OPTARG ;; d) depth=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -gt 0 ]] || usage
for v in "$rounds" "${tokens:-1}" "$depth" $threads; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "-r, -n, -d and -t take whole numbers, not '$v'" >&2; exit 2; }
done
[[ $mode == tg || $mode == pp ]] || { echo "-m takes tg or pp, not '$mode'" >&2; exit 2; }
[[ $mode == pp && $depth != 0 ]] && { echo "-d applies to -m tg only" >&2; exit 2; }
tokens=${tokens:-$([[ $mode == tg ]] && echo 128 || echo 512)}
llama=${LLAMA_BENCH:-$HOME/.cache/llamacpp-anchor/bin/llama-bench}
[[ -x $llama ]] || { echo "no llama-bench at $llama: build it (../shared/anchors/README.md) or set LLAMA_BENCH" >&2; exit 2; }
for f in "$@"; do [[ -f $f ]] || { echo "no file $f" >&2; exit 2; }; done

here=$(dirname "$0")
gcc -O2 -mavx2 -fopenmp "$here/read.c" -o /tmp/dss-read
dotnet build src/DeepSeekSharp.Cli -c Release -v q -nologo >/dev/null
dss="dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll"

if [[ $mode == tg ]]; then
    largs=(-p 0 -n "$tokens" -d "$depth")
    dargs=(--prompt-tokens 0 --gen-tokens "$tokens" --depth "$depth")
else
    largs=(-p "$tokens" -n 0)
    dargs=(--prompt-tokens "$tokens" --gen-tokens 1)
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((i = 1; i <= rounds; i++)); do
    for f in "$@"; do
        for t in $threads; do
            read_gbs=$(/tmp/dss-read "$t" | python3 -c 'import json, sys; print(json.load(sys.stdin)["read_gb_s"])')
            theirs=$("$llama" -m "$f" -t "$t" -r 2 -o json "${largs[@]}" 2>/dev/null |
                python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["avg_ts"])')
            ours=$($dss bench --model "$f" --threads "$t" --repeat 3 --json "${dargs[@]}" 2>/dev/null | python3 -c '
import json, sys
text = sys.stdin.read()
d = json.loads(text[text.index("{"):])
print(d["decode_tok_s"] if sys.argv[1] == "tg" else d["prefill_tok_s"], d["decode_gb_s"])' "$mode")
            read -r ours_ts ours_gbs <<< "$ours"
            echo "$f $t $read_gbs $theirs $ours_ts $ours_gbs" >> "$results"
            python3 -c 'import sys; f, t, r, l, o, g, i = sys.argv[1:]; s = "" if t == "1" else "s"; print(f"round {i}: {f}, {t} thread{s}: C read {float(r):.1f} GB/s, llama.cpp {float(l):.2f} tok/s, ours {float(o):.2f} tok/s ({float(o) / float(l):.2f}x)")' \
                "$f" "$t" "$read_gbs" "$theirs" "$ours_ts" "$ours_gbs" "$i"
        done
    done
done

python3 - "$results" "$mode" "$tokens" "$depth" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
mode, tokens, depth = sys.argv[2], sys.argv[3], sys.argv[4]
what = f"{mode}{tokens}" + (f" at depth {depth}" if mode == "tg" and depth != "0" else "")
for key in dict.fromkeys((r[0], r[1]) for r in rows):
    mine = [r for r in rows if (r[0], r[1]) == key]
    med = lambda i: statistics.median(float(r[i]) for r in mine)
    ratio = statistics.median(float(r[4]) / float(r[3]) for r in mine)
    line = f"{key[0]}, {key[1]} thread{'s' if key[1] != '1' else ''}, {what}, medians of {len(mine)}: llama.cpp {med(3):.2f} tok/s, ours {med(4):.2f} ({ratio:.2f}x run by run)"
    if mode == "tg":
        share = statistics.median(float(r[5]) / float(r[2]) for r in mine)
        line += f"; ours read {med(5):.1f} GB/s, {share:.0%} of the C read before it (C read {med(2):.1f})"
    print(line)
EOF
