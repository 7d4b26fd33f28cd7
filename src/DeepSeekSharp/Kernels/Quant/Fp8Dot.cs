using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>FP8 E4M3 weights (one float scale per block of <c>blockCols</c> columns, DeepSeek-V3's
/// <c>weight_scale_inv</c>) against float32 activations, with the codes widened in registers: no float32 copy of the
/// weights, and no multiplication per weight.
///
/// <para>Widening is exact and costs two integer operations: the code sign-extended to 32 bits and shifted left by 20
/// puts its 3 mantissa bits and 4 exponent bits at the bottom of a float32's mantissa and exponent fields and its sign
/// in bits 27–31; masking with 0x87F00000 keeps sign, exponent and mantissa. That float32 is the E4M3 value times
/// 2⁻¹²⁰ exactly — for normal codes (exponent e ≥ 1: 2^(e−127)(1 + m/8) against 2^(e−7)(1 + m/8)) and subnormal ones
/// (exponent 0 lands on float32's subnormals: 2⁻¹²⁶ · m/8 against 2⁻⁶ · m/8).</para>
///
/// <para>The scale and the 2¹²⁰ go on the activations instead (<see cref="ScaleActivations"/>: xs[c] = x[c] · scale ·
/// 2¹²⁰, once per token and block row, shared by the 128 rows of the block), so a weight costs a load-and-widen, a shift,
/// a mask and a fused multiply-add. The product is defined as Σ fp8(q[c]) · 2⁻¹²⁰ · xs[c], summed in
/// <see cref="Dot"/>'s order for the vector width — bit-identical to <see cref="Dot"/> over the widened values and xs.
/// The two NaN codes (0x7F, 0xFF) widen to numbers: callers check rows for them once (<see cref="HasNaNCode"/>).</para></summary>
internal static class Fp8Dot
{
    /// <summary>2¹²⁰, the factor between a code widened by bit shifts and its E4M3 value.</summary>
    internal const float Widening = 1.329228e36f;

    /// <summary>xs[c] = x[c] · (scales[c / blockCols] · 2¹²⁰). False when some xs is not finite (|x · scale| ≥ 2⁸, or
    /// x not finite): then the product must be taken by <see cref="Unwidened"/>.</summary>
    public static bool ScaleActivations(ReadOnlySpan<float> x, ReadOnlySpan<float> scales, int blockCols, Span<float> xs)
    {
        if (xs.Length < x.Length) ThrowHelper.TooShort(nameof(xs), x.Length, xs.Length);
        float check = 0; // becomes NaN if any xs is infinite or NaN (∞ · 0)
        for (int c0 = 0, b = 0; c0 < x.Length; c0 += blockCols, b++)
        {
            int end = Math.Min(x.Length, c0 + blockCols);
            float scale = scales[b] * Widening;
            ReadOnlySpan<float> xb = x[c0..end];
            Span<float> sb = xs[c0..end];
            System.Numerics.Tensors.TensorPrimitives.Multiply(xb, scale, sb);
            check += System.Numerics.Tensors.TensorPrimitives.Sum(sb) * 0f;
        }
        return check == 0;
    }

    /// <summary>Σ widened(codes[c]) · xs[c] on the path <see cref="Dot.Compute"/> takes.</summary>
    public static float Compute(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs)
    {
        if (xs.Length < codes.Length) ThrowHelper.TooShort(nameof(xs), codes.Length, xs.Length);
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) return V512(codes, xs);
        if (Vector256.IsHardwareAccelerated && Avx2.IsSupported) return V256(codes, xs);
        return Scalar(codes, xs);
    }

    /// <summary>The specification: the widened value (the E4M3 value times 2⁻¹²⁰, exact) times xs, summed in order.</summary>
    internal static float Scalar(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs)
    {
        float s = 0;
        for (int i = 0; i < codes.Length; i++) s += Widen(codes[i]) * xs[i];
        return s;
    }

    /// <summary>A code widened as the vector paths do (the E4M3 value times 2⁻¹²⁰; NaN codes give a number).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Widen(byte code) => BitConverter.Int32BitsToSingle(((sbyte)code << 20) & unchecked((int)0x87F00000));

    internal static float V512(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs) => Vector<Simd512, Vector512<float>>(codes, xs);

    internal static float V256(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs) => Vector<Simd256, Vector256<float>>(codes, xs);

    /// <summary><see cref="Dot"/>'s loop: four accumulators over blocks of four vectors, one over single vectors,
    /// (s0 + s1) + (s2 + s3) reduced, then the scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Vector<TS, TV>(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs) where TS : ISimd<TV> where TV : struct
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        ref float rx = ref MemoryMarshal.GetReference(xs);
        int n = codes.Length, i = 0, w = TS.Count;
        TV s0 = TS.Zero, s1 = s0, s2 = s0, s3 = s0;
        for (; i + 4 * w <= n; i += 4 * w)
        {
            s0 = TS.Fma(TS.LoadFp8(ref rc, (nuint)i), TS.Load(ref rx, (nuint)i), s0);
            s1 = TS.Fma(TS.LoadFp8(ref rc, (nuint)(i + w)), TS.Load(ref rx, (nuint)(i + w)), s1);
            s2 = TS.Fma(TS.LoadFp8(ref rc, (nuint)(i + 2 * w)), TS.Load(ref rx, (nuint)(i + 2 * w)), s2);
            s3 = TS.Fma(TS.LoadFp8(ref rc, (nuint)(i + 3 * w)), TS.Load(ref rx, (nuint)(i + 3 * w)), s3);
        }
        for (; i + w <= n; i += w) s0 = TS.Fma(TS.LoadFp8(ref rc, (nuint)i), TS.Load(ref rx, (nuint)i), s0);
        float sum = TS.Sum(TS.Add(TS.Add(s0, s1), TS.Add(s2, s3)));
        for (; i < n; i++) sum += Widen(Unsafe.Add(ref rc, i)) * Unsafe.Add(ref rx, i);
        return sum;
    }

    /// <summary>The product where the scaled activations would overflow (<see cref="ScaleActivations"/> false):
    /// Σ fp8(q[c]) · (x[c] · scale) in order, in float32.</summary>
    public static float Unwidened(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, ReadOnlySpan<float> x)
    {
        float s = 0;
        for (int i = 0; i < codes.Length; i++) s += NumberFormats.F8E4M3ToFloat(codes[i]) * (x[i] * scales[i / blockCols]);
        return s;
    }

    /// <summary>Whether any code is one of the two NaN codes (magnitude bits all ones), 32 codes an instruction.</summary>
    public static bool HasNaNCode(ReadOnlySpan<byte> codes)
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        int n = codes.Length, i = 0;
        Vector256<byte> magnitude = Vector256.Create((byte)0x7F), largest = Vector256<byte>.Zero;
        for (; i + 32 <= n; i += 32) largest = Vector256.Max(largest, Vector256.LoadUnsafe(ref rc, (nuint)i) & magnitude);
        bool nan = Vector256.EqualsAny(largest, magnitude);
        for (; i < n; i++) nan |= (Unsafe.Add(ref rc, i) & 0x7F) == 0x7F;
        return nan;
    }

    /// <summary><see cref="NumberFormats.Fp8Row"/> (value · scale, rounded once), vectorised with the same widening:
    /// the widened code times scale · 2¹²⁰ forms the same real product. Bit-identical, NaN codes included.</summary>
    public static void Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst)
    {
        if (dst.Length < codes.Length) ThrowHelper.TooShort(nameof(dst), codes.Length, dst.Length);
        bool exact = true; // scale · 2^120 representable
        foreach (float s in scales) exact &= MathF.Abs(s) < 256f;
        if (exact && Vector512.IsHardwareAccelerated && Avx512F.IsSupported) DequantizeVector<Simd512, Vector512<float>>(codes, scales, blockCols, dst);
        else if (exact && Vector256.IsHardwareAccelerated && Avx2.IsSupported) DequantizeVector<Simd256, Vector256<float>>(codes, scales, blockCols, dst);
        else NumberFormats.Fp8Row(codes, scales, blockCols, dst);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeVector<TS, TV>(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst)
        where TS : ISimd<TV> where TV : struct
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        ref float rd = ref MemoryMarshal.GetReference(dst);
        int n = codes.Length, w = TS.Count;
        for (int c0 = 0, b = 0; c0 < n; c0 += blockCols, b++)
        {
            int end = Math.Min(n, c0 + blockCols), i = c0;
            TV scale = TS.Broadcast(scales[b] * Widening);
            for (; i + w <= end; i += w) TS.Store(TS.Multiply(TS.LoadFp8(ref rc, (nuint)i), scale), ref rd, (nuint)i);
            for (; i < end; i++) Unsafe.Add(ref rd, i) = NumberFormats.F8E4M3ToFloat(Unsafe.Add(ref rc, i)) * scales[b];
        }
        if (HasNaNCode(codes))
            for (int c = 0; c < n; c++)
                if ((codes[c] & 0x7F) == 0x7F) dst[c] = float.NaN;
    }
}
