#!/usr/bin/env bash
# Runs the engine as an ARM64 (AdvSimd) build under user-mode QEMU, on an x86 machine: the golden cases' logits
# against DeepSeek's reference (max |ours − ref| / max |ref| ≤ 1e-4 at every position, prompt then decode through the
# latent cache, as tests/…/GoldenForwardTests asserts); random GGUF models (Q8_0 and Q5_0 rows, Q4_K with a Q6_K
# head) against the same files on x86, with ARM's dot-product extension and without it; and the README's command.
# QEMU's speed says nothing about an ARM CPU's; this checks the 128-bit kernels' results. Needs (Debian, as root): dpkg --add-architecture arm64; apt-get install qemu-user-static libc6:arm64
# libstdc++6:arm64 libgcc-s1:arm64 zlib1g:arm64 (`--install` does that when QEMU is missing). Run from the
# repository root.
set -euo pipefail
out=${ARM64_OUT:-/tmp/dss-arm64}
if [ "${1:-}" == "--install" ] && ! command -v qemu-aarch64-static >/dev/null; then
    # What the check needs, from Debian's registry (as root): QEMU and an ARM64 C runtime for .NET's host.
    dpkg --add-architecture arm64
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 zlib1g:arm64 >/dev/null
fi
dotnet publish src/DeepSeekSharp.Cli -c Release -r linux-arm64 --self-contained -o "$out/bin" -v q -nologo >/dev/null
dotnet build src/DeepSeekSharp.Cli -c Release -v q -nologo >/dev/null
# With .NET's W^X double mapping of JIT code, runs under QEMU 7.2 crash now and then (builds without the 128-bit
# kernels too); without it they do not.
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_EnableWriteXorExecute=0
arm() { qemu-aarch64-static "$out/bin/dss" "$@"; }
x86="dotnet src/DeepSeekSharp.Cli/bin/Release/net10.0/dss.dll"
# close REF KEY OURS LABEL [FLIPS]: every position's logits within 1e-4 of the largest of REF's (as the golden tests
# assert), except at most FLIPS positions (default none), which must be within 2e-2. Random GGUF models, ARM64
# against x86, allow two: a code flip (below) moves a whole position's logits by up to ~1% while the other positions
# agree to ~1e-7, and a wrong kernel moves every position. One layer of V2-Lite's shape in Q4_K, 2026-12-06 on an
# AVX2-only x86 (Zen 3): ARM against x86's AVX2 path 8.3e-3 at one position of eight, against its 128-bit path
# 5.2e-3 at another, every other position under 6e-7.
close() {
    python3 - "$@" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))[sys.argv[2]]
ours = json.load(open(sys.argv[3]))["logits"]
flips = int(sys.argv[5]) if len(sys.argv) > 5 else 0
errs = [max(abs(a - b) for a, b in zip(o, r)) / max(abs(b) for b in r) for o, r in zip(ours, ref)]
past = [f"{i}: {e:.2e}" for i, e in enumerate(errs) if e > 1e-4]
print(f"{sys.argv[4]}: {len(ours)} positions, max |ours - ref| / max |ref| = {max(errs):.2e}" + (f"; past 1e-4: {', '.join(past) or 'none'}" if flips else ""))
sys.exit(0 if len(ours) == len(ref) and len(past) <= flips and max(errs) <= 2e-2 else 1)
PY
}
arm bench --cpu

# Golden cases: prefill the first half of the prompt, decode the rest one token at a time.
for case in v2-lite-tiny v3-tiny v3-fp8-tiny v2-grouped-tiny; do
    dir=tests/data/$case
    ids=$(python3 -c "import json; print(','.join(map(str, json.load(open('$dir/expected.json'))['prompt_ids'])))")
    half=$(python3 -c "print(len('$ids'.split(',')) // 2)")
    arm logits --model "$dir" --tokens "$ids" --decode-from "$half" > "$out/$case.json"
    close "$dir/expected.json" per_position_logits "$out/$case.json" "$case against the reference"
done

# GGUF: random models converted to each quantisation type (the tiny shape's 64-wide rows fall back to Q5_0 and
# Q8_0, as llama.cpp's would; one layer of V2-Lite's shape takes Q4_K, Q5_0 and a Q6_K head), ARM64 against x86 on the
# same file, with the ARM dot-product extension (QEMU's default CPU) and without it (a Cortex-A72: smull + sadalp).
# Quantised activations make random weights a poor judge past this: a last-bit difference in a norm (vector
# widths sum in different orders) can move an activation code by one step, which random layers amplify — one
# layer of V2-Lite's shape all in Q6_K differs by 0.1% between this x86 host's own AVX2 and AVX-512 paths (`close` allows two such positions).
if [ ! -f "$out/wide/config.json" ]; then
    $x86 create-random --preset v2-lite-tiny --out "$out/tiny" >/dev/null
    $x86 create-random --preset v2-lite --layers 1 --no-mtp --out "$out/wide" >/dev/null
fi
for cpu in max cortex-a72; do
    QEMU_CPU=$cpu arm bench --cpu | sed "s/^/$cpu: /"
    for m in tiny:q8_0 wide:q4_k; do
        src=${m%%:*} type=${m##*:} gguf="$out/${m/:/-}.gguf"
        [ -f "$gguf" ] || $x86 convert --model "$out/$src" --out "$gguf" --type "$type" >/dev/null 2>&1
        tokens=1,100,2000,30000,5,77,4242,9
        $x86 logits --model "$gguf" --tokens $tokens --decode-from 4 > "$out/x86.json"
        QEMU_CPU=$cpu arm logits --model "$gguf" --tokens $tokens --decode-from 4 > "$out/arm.json"
        close "$out/x86.json" logits "$out/arm.json" "$(basename "$gguf") on $cpu against x86" 2
    done
done

# The README's command on the bundled model: the same reply as on x86.
want=$($x86 generate --prompt "What is 452 + 379?" --temperature 0 2>/dev/null)
got=$(arm generate --prompt "What is 452 + 379?" --temperature 0 2>/dev/null)
if [ "$got" != "$want" ]; then echo "generate: ARM64 replied differently:"; echo "$got"; exit 1; fi
echo "generate (bundled r1-tiny): the same reply as on x86, ending \"$(echo "$got" | tail -1)\""
