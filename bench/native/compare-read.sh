#!/usr/bin/env bash
# Alternates `dss bench --memory` with the C read (read.c) ROUNDS times (default 5), so both see the same minutes,
# and prints each pair and the medians for 1 and 2 threads. Needs gcc with OpenMP. Run from the repository root.
set -euo pipefail
rounds=${1:-5}
here=$(dirname "$0")
gcc -O2 -mavx2 -fopenmp "$here/read.c" -o /tmp/dss-read
dotnet build src/DeepSeekSharp.Cli -c Release -v q -nologo >/dev/null
dss="dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll"
declare -a p1 p2 n1 n2
for ((i = 0; i < rounds; i++)); do
    probe=$($dss bench --memory --json)
    p1+=($(echo "$probe" | sed -E 's/.*"read_gb_s_1_thread":([0-9.]+).*/\1/'))
    p2+=($(echo "$probe" | sed -E 's/.*"read_gb_s_all_threads":([0-9.]+).*/\1/'))
    n1+=($(/tmp/dss-read 1 | sed -E 's/.*"read_gb_s": ([0-9.]+).*/\1/'))
    n2+=($(/tmp/dss-read 2 | sed -E 's/.*"read_gb_s": ([0-9.]+).*/\1/'))
    printf 'round %d: 1 thread probe %.1f / C %.1f GB/s; 2 threads probe %.1f / C %.1f GB/s\n' $((i + 1)) "${p1[i]}" "${n1[i]}" "${p2[i]}" "${n2[i]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
m1=$(median "${p1[@]}"); c1=$(median "${n1[@]}"); m2=$(median "${p2[@]}"); c2=$(median "${n2[@]}")
awk -v a="$m1" -v b="$c1" -v c="$m2" -v d="$c2" 'BEGIN { printf "medians: 1 thread probe %.1f / C %.1f GB/s (%.0f%%); 2 threads probe %.1f / C %.1f GB/s (%.0f%%)\n", a, b, 100 * a / b, c, d, 100 * c / d }'
