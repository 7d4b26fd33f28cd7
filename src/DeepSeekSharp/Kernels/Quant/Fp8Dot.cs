using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>float32 activations against a row of FP8 E4M3 codes with one float scale per block of
/// <c>blockCols</c> columns (DeepSeek-V3's <c>weight_scale_inv</c>), widened in registers: no float32 copy of the row.
///
/// <para>Every result is bit-identical to dequantising the row (<see cref="NumberFormats.Fp8Row"/>: value · scale,
/// rounded once) and taking <see cref="Dot.Compute"/> of it. The widening is exact and costs two integer operations:
/// the code sign-extended to 32 bits and shifted left by 20 puts its 3 mantissa bits and 4 exponent bits at the bottom
/// of a float32's mantissa and exponent fields and its sign in bits 27–31; masking with 0x87F00000 keeps sign,
/// exponent and mantissa. That float32 is the E4M3 value times 2⁻¹²⁰ exactly — for normal codes (exponent e ≥ 1:
/// 2^(e−127)(1 + m/8) against 2^(e−7)(1 + m/8)) and for subnormal ones (exponent 0 lands on float32's subnormals:
/// 2⁻¹²⁶ · m/8 against 2⁻⁶ · m/8). Multiplying it by scale · 2¹²⁰ (exact while |scale| &lt; 2⁸) forms the same
/// real product as value · scale, so it rounds to the same float. The two NaN codes (0x7F, 0xFF) would widen to a
/// number, so a first pass over the row (which also brings it in from memory) looks for them, and a row with one
/// gives NaN, as its dequantised copy's dot product would.</para>
///
/// <para>The vector loop is <see cref="Dot"/>'s (four accumulators over blocks of four vectors, one over single vectors,
/// (s0 + s1) + (s2 + s3), the scalar tail), so a block of four vectors must lie inside one scale block:
/// <see cref="Fuses"/> says when a row qualifies; other rows go through the dequantised copy.</para></summary>
public static class Fp8Dot
{
    /// <summary>2¹²⁰, the factor between a code widened by bit shifts and its E4M3 value.</summary>
    private const float Widening = 1.329228e36f;

    /// <summary>Whether the fused vector path computes rows with these block widths and scales (else use
    /// <see cref="NumberFormats.Fp8Row"/> and <see cref="Dot.Compute"/>).</summary>
    public static bool Fuses(int blockCols, ReadOnlySpan<float> scales)
    {
        int lanes = Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? Vector512<float>.Count
            : Vector256.IsHardwareAccelerated && Avx2.IsSupported ? Vector256<float>.Count : 0;
        if (lanes == 0 || blockCols % (4 * lanes) != 0) return false;
        foreach (float s in scales)
            if (!(MathF.Abs(s) < 256f)) return false;
        return true;
    }

    /// <summary>Σ fp8(codes[c]) · scales[c / blockCols] · x[c] on the path <see cref="Dot.Compute"/> takes; the row must
    /// qualify (<see cref="Fuses"/>).</summary>
    public static float Compute(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, ReadOnlySpan<float> x)
    {
        if (codes.Length != x.Length) ThrowHelper.LengthMismatch(nameof(x), codes.Length, x.Length);
        if (scales.Length < (codes.Length + blockCols - 1) / blockCols) ThrowHelper.TooShort(nameof(scales), (codes.Length + blockCols - 1) / blockCols, scales.Length);
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) return V512(codes, scales, blockCols, x);
        if (Vector256.IsHardwareAccelerated && Avx2.IsSupported) return V256(codes, scales, blockCols, x);
        return Scalar(codes, scales, blockCols, x);
    }

    /// <summary>The specification: the dequantised value (rounded to float32) times x, summed in order.</summary>
    internal static float Scalar(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, ReadOnlySpan<float> x)
    {
        float s = 0;
        for (int i = 0; i < codes.Length; i++) s += NumberFormats.F8E4M3ToFloat(codes[i]) * scales[i / blockCols] * x[i];
        return s;
    }

    internal static float V512(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, ReadOnlySpan<float> x) =>
        Vector<Simd512, Vector512<float>>(codes, scales, blockCols, x);

    internal static float V256(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, ReadOnlySpan<float> x) =>
        Vector<Simd256, Vector256<float>>(codes, scales, blockCols, x);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Vector<TS, TV>(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, ReadOnlySpan<float> x)
        where TS : ISimd<TV> where TV : struct
    {
        if (HasNaNCode(codes)) return float.NaN;
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        ref float rx = ref MemoryMarshal.GetReference(x);
        int n = codes.Length, i = 0, w = TS.Count;
        TV s0 = TS.Zero, s1 = s0, s2 = s0, s3 = s0;
        for (; i + 4 * w <= n; i += 4 * w)
        {
            TV scale = TS.Broadcast(scales[i / blockCols] * Widening);
            s0 = TS.Fma(TS.Multiply(TS.LoadFp8(ref rc, (nuint)i), scale), TS.Load(ref rx, (nuint)i), s0);
            s1 = TS.Fma(TS.Multiply(TS.LoadFp8(ref rc, (nuint)(i + w)), scale), TS.Load(ref rx, (nuint)(i + w)), s1);
            s2 = TS.Fma(TS.Multiply(TS.LoadFp8(ref rc, (nuint)(i + 2 * w)), scale), TS.Load(ref rx, (nuint)(i + 2 * w)), s2);
            s3 = TS.Fma(TS.Multiply(TS.LoadFp8(ref rc, (nuint)(i + 3 * w)), scale), TS.Load(ref rx, (nuint)(i + 3 * w)), s3);
        }
        for (; i + w <= n; i += w) s0 = TS.Fma(TS.Multiply(TS.LoadFp8(ref rc, (nuint)i), TS.Broadcast(scales[i / blockCols] * Widening)), TS.Load(ref rx, (nuint)i), s0);
        float sum = TS.Sum(TS.Add(TS.Add(s0, s1), TS.Add(s2, s3)));
        for (; i < n; i++) sum += NumberFormats.F8E4M3ToFloat(Unsafe.Add(ref rc, i)) * scales[i / blockCols] * Unsafe.Add(ref rx, i);
        return sum;
    }

    /// <summary><see cref="NumberFormats.Fp8Row"/> with the same widening: bit-identical, NaN codes included.</summary>
    public static void Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst)
    {
        if (dst.Length < codes.Length) ThrowHelper.TooShort(nameof(dst), codes.Length, dst.Length);
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported && Fuses(blockCols, scales)) DequantizeVector<Simd512, Vector512<float>>(codes, scales, blockCols, dst);
        else if (Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fuses(blockCols, scales)) DequantizeVector<Simd256, Vector256<float>>(codes, scales, blockCols, dst);
        else NumberFormats.Fp8Row(codes, scales, blockCols, dst);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeVector<TS, TV>(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst)
        where TS : ISimd<TV> where TV : struct
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        ref float rd = ref MemoryMarshal.GetReference(dst);
        int n = codes.Length, i = 0, w = TS.Count;
        for (; i + w <= n; i += w) TS.Store(TS.Multiply(TS.LoadFp8(ref rc, (nuint)i), TS.Broadcast(scales[i / blockCols] * Widening)), ref rd, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref rd, i) = NumberFormats.F8E4M3ToFloat(Unsafe.Add(ref rc, i)) * scales[i / blockCols];
        if (HasNaNCode(codes))
            for (int c = 0; c < n; c++)
                if ((codes[c] & 0x7F) == 0x7F) dst[c] = float.NaN;
    }

    /// <summary>Whether any code is one of the two NaN codes (magnitude bits all ones): the row's largest magnitude,
    /// 32 codes an instruction. Run before the vector loop, it is also the pass that streams the row from memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool HasNaNCode(ReadOnlySpan<byte> codes)
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        int n = codes.Length, i = 0;
        Vector256<byte> magnitude = Vector256.Create((byte)0x7F), largest = Vector256<byte>.Zero;
        for (; i + 32 <= n; i += 32) largest = Vector256.Max(largest, Vector256.LoadUnsafe(ref rc, (nuint)i) & magnitude);
        bool nan = Vector256.EqualsAny(largest, magnitude);
        for (; i < n; i++) nan |= (Unsafe.Add(ref rc, i) & 0x7F) == 0x7F;
        return nan;
    }
}
