using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>A float code format that widens to float32 exactly with two integer operations (sign-extend and shift,
/// then mask), up to a constant power of two: value = widened · <see cref="Factor"/>. Codes whose value that cannot
/// express (infinities, NaN) are found per row by <see cref="HasSpecialCode"/>.</summary>
internal interface IWidenedCodes
{
    /// <summary>Bytes per code.</summary>
    static abstract int Bytes { get; }
    /// <summary>value = widened · Factor, exactly, for every code that is not special.</summary>
    static abstract float Factor { get; }
    /// <summary>Code i widened as the vector paths do.</summary>
    static abstract float Widen(ref byte codes, int i);
    /// <summary>Code i's value (the format's specification, special codes included).</summary>
    static abstract float Value(ref byte codes, int i);
    /// <summary>Codes i .. i + TS.Count − 1 widened.</summary>
    static abstract TV Load<TS, TV>(ref byte codes, nuint i) where TS : ISimd<TV> where TV : struct;
    /// <summary>Whether any of the codes is one the widening gets wrong.</summary>
    static abstract bool HasSpecialCode(ReadOnlySpan<byte> codes);
    /// <summary>dst[c] = value(codes[c]) · scales[c / blockCols], rounded once (special codes included).</summary>
    static abstract void Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst);
}

/// <summary>FP8 E4M3 (V3/R1's weights). The code sign-extended to 32 bits and shifted left by 20 puts its 3 mantissa
/// bits and 4 exponent bits at the bottom of a float32's mantissa and exponent fields and its sign in bits 27–31;
/// masking with 0x87F00000 keeps sign, exponent and mantissa. That float32 is the E4M3 value times 2⁻¹²⁰ exactly —
/// for normal codes (exponent e ≥ 1: 2^(e−127)(1 + m/8) against 2^(e−7)(1 + m/8)) and subnormal ones (exponent 0
/// lands on float32's subnormals: 2⁻¹²⁶ · m/8 against 2⁻⁶ · m/8). The two NaN codes (0x7F, 0xFF) are special.</summary>
internal readonly struct Fp8Codes : IWidenedCodes
{
    public static int Bytes => 1;
    public static float Factor => BitConverter.Int32BitsToSingle((127 + 120) << 23); // 2^120, exactly
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ref byte codes, int i) => BitConverter.Int32BitsToSingle(((sbyte)Unsafe.Add(ref codes, i) << 20) & unchecked((int)0x87F00000));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Value(ref byte codes, int i) => NumberFormats.F8E4M3ToFloat(Unsafe.Add(ref codes, i));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(ref byte codes, nuint i) where TS : ISimd<TV> where TV : struct => TS.LoadFp8(ref codes, i);

    /// <summary>The row's largest code magnitude, 32 codes an instruction, compared with 0x7F.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool HasSpecialCode(ReadOnlySpan<byte> codes)
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        int n = codes.Length, i = 0;
        Vector256<byte> magnitude = Vector256.Create((byte)0x7F), largest = Vector256<byte>.Zero;
        for (; i + 32 <= n; i += 32) largest = Vector256.Max(largest, Vector256.LoadUnsafe(ref rc, (nuint)i) & magnitude);
        bool nan = Vector256.EqualsAny(largest, magnitude);
        for (; i < n; i++) nan |= (Unsafe.Add(ref rc, i) & 0x7F) == 0x7F;
        return nan;
    }

    public static void Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst) =>
        Fp8Rows.Dequantize(codes, scales, blockCols, dst);
}

/// <summary>IEEE binary16 (F16 checkpoints and GGUF files). The code sign-extended to 32 bits and shifted left by 13
/// puts its 10 mantissa bits and 5 exponent bits at the bottom of a float32's fields and its sign in bits 28–31;
/// masking with 0x8FFFE000 keeps them: the value times 2⁻¹¹² exactly, subnormals included (they land on float32's
/// subnormals). Infinities and NaN (exponent 31) are special.</summary>
internal readonly struct F16Codes : IWidenedCodes
{
    public static int Bytes => 2;
    public static float Factor => BitConverter.Int32BitsToSingle((127 + 112) << 23); // 2^112, exactly
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ref byte codes, int i) =>
        BitConverter.Int32BitsToSingle(((short)Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref codes, 2 * i)) << 13) & unchecked((int)0x8FFFE000));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Value(ref byte codes, int i) => NumberFormats.F16ToFloat(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref codes, 2 * i)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(ref byte codes, nuint i) where TS : ISimd<TV> where TV : struct => TS.LoadF16(ref codes, i);

    /// <summary>The row's largest magnitude (sign cleared), 16 codes an instruction, against 0x7C00.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool HasSpecialCode(ReadOnlySpan<byte> codes)
    {
        ReadOnlySpan<ushort> h = MemoryMarshal.Cast<byte, ushort>(codes);
        ref ushort rh = ref MemoryMarshal.GetReference(h);
        int n = h.Length, i = 0;
        Vector256<ushort> magnitude = Vector256.Create((ushort)0x7FFF), largest = Vector256<ushort>.Zero;
        for (; i + 16 <= n; i += 16) largest = Vector256.Max(largest, Vector256.LoadUnsafe(ref rh, (nuint)i) & magnitude);
        bool special = Vector256.GreaterThanOrEqualAny(largest, Vector256.Create((ushort)0x7C00));
        for (; i < n; i++) special |= (Unsafe.Add(ref rh, i) & 0x7FFF) >= 0x7C00;
        return special;
    }

    public static void Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst)
    {
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(codes), dst);
        BlockScales.Apply(dst[..(codes.Length / 2)], scales, blockCols);
    }
}

/// <summary>bfloat16 (DeepSeek's checkpoints: V3/R1's embedding and head beside the FP8 weights). A float32's top
/// half: the code shifted left by 16 is its value exactly, infinities and NaN included, so no code is special and
/// the factor is 1.</summary>
internal readonly struct Bf16Codes : IWidenedCodes
{
    public static int Bytes => 2;
    public static float Factor => 1f;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ref byte codes, int i) => BitConverter.Int32BitsToSingle(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref codes, 2 * i)) << 16);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Value(ref byte codes, int i) => Widen(ref codes, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(ref byte codes, nuint i) where TS : ISimd<TV> where TV : struct => TS.LoadBf16(ref Unsafe.As<byte, ushort>(ref codes), i);
    public static bool HasSpecialCode(ReadOnlySpan<byte> codes) => false;

    public static void Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst)
    {
        NumberFormats.BF16ToFloat(MemoryMarshal.Cast<byte, ushort>(codes), dst);
        BlockScales.Apply(dst[..(codes.Length / 2)], scales, blockCols);
    }
}

/// <summary>Block scales on a row of values.</summary>
internal static class BlockScales
{
    /// <summary>row[c] ·= scales[c / blockCols]; blocks of scale 1 are left as they are (the same values).</summary>
    public static void Apply(Span<float> row, ReadOnlySpan<float> scales, int blockCols)
    {
        for (int c0 = 0, b = 0; c0 < row.Length; c0 += blockCols, b++)
        {
            Span<float> block = row[c0..Math.Min(row.Length, c0 + blockCols)];
            if (scales[b] != 1f) TensorPrimitives.Multiply(block, scales[b], block);
        }
    }
}

/// <summary>Float code formats (<see cref="IWidenedCodes"/>: FP8 E4M3, F16) against float32 activations, with the codes
/// widened in registers: no float32 copy of the weights and no multiplication per weight. The format's factor and any
/// block scale go on the activations instead (<see cref="ScaleActivations"/>: xs[c] = x[c] · scale · factor, once per
/// token and block row), so a weight costs a load-and-widen, a shift, a mask and a fused multiply-add. The product is
/// defined as Σ widened(q[c]) · xs[c] in <see cref="Dot"/>'s order for the vector width — bit-identical to
/// <see cref="Dot"/> over the widened values and xs.</summary>
internal static class WidenedDot<TC> where TC : struct, IWidenedCodes
{
    /// <summary>xs[c] = x[c] · (scales[c / blockCols] · factor). False when some xs is not finite (the scaled value
    /// overflows, or x is not finite): then the product must be taken by <see cref="Unwidened"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool ScaleActivations(ReadOnlySpan<float> x, ReadOnlySpan<float> scales, int blockCols, Span<float> xs)
    {
        if (xs.Length < x.Length) ThrowHelper.TooShort(nameof(xs), x.Length, xs.Length);
        if (scales.Length < (x.Length + blockCols - 1) / blockCols) ThrowHelper.TooShort(nameof(scales), (x.Length + blockCols - 1) / blockCols, scales.Length);
        if (Vector512.IsHardwareAccelerated) return Scale<Simd512, Vector512<float>>(x, scales, blockCols, xs);
        if (Vector256.IsHardwareAccelerated) return Scale<Simd256, Vector256<float>>(x, scales, blockCols, xs);
        if (Simd128.IsFast) return Scale<Simd128, Vector128<float>>(x, scales, blockCols, xs);
        float check = 0;
        for (int c = 0; c < x.Length; c++)
        {
            xs[c] = x[c] * (scales[c / blockCols] * TC.Factor);
            check += xs[c] * 0f;
        }
        return check == 0;
    }

    /// <summary>One pass: each product stored, and 0 · product summed, which stays 0 unless a product is infinite or NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static bool Scale<TS, TV>(ReadOnlySpan<float> x, ReadOnlySpan<float> scales, int blockCols, Span<float> xs) where TS : ISimd<TV> where TV : struct
    {
        ref float rx = ref MemoryMarshal.GetReference(x);
        ref float rs = ref MemoryMarshal.GetReference(xs);
        int n = x.Length, w = TS.Count;
        TV check = TS.Zero;
        float tail = 0;
        for (int c0 = 0, b = 0; c0 < n; c0 += blockCols, b++)
        {
            int end = Math.Min(n, c0 + blockCols), i = c0;
            float scale = scales[b] * TC.Factor;
            TV sv = TS.Broadcast(scale);
            for (; i + w <= end; i += w)
            {
                TV v = TS.Multiply(TS.Load(ref rx, (nuint)i), sv);
                TS.Store(v, ref rs, (nuint)i);
                check = TS.Add(check, TS.Multiply(v, TS.Zero));
            }
            for (; i < end; i++)
            {
                float v = Unsafe.Add(ref rx, i) * scale;
                Unsafe.Add(ref rs, i) = v;
                tail += v * 0f;
            }
        }
        return TS.Sum(check) + tail == 0;
    }

    /// <summary>Σ widened(codes[c]) · xs[c] on the path <see cref="Dot.Compute"/> takes (codes: n × TC.Bytes bytes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Compute(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs)
    {
        int n = codes.Length / TC.Bytes;
        if (xs.Length < n) ThrowHelper.TooShort(nameof(xs), n, xs.Length);
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) return V512(codes, xs);
        if (Vector256.IsHardwareAccelerated && Avx2.IsSupported) return V256(codes, xs);
        if (Simd128.IsFast) return V128(codes, xs);
        return Scalar(codes, xs);
    }

    /// <summary>The specification: the widened value (exact) times xs, summed in order.</summary>
    internal static float Scalar(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs)
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        float s = 0;
        for (int i = 0; i < codes.Length / TC.Bytes; i++) s += TC.Widen(ref rc, i) * xs[i];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V512(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs) => Vector<Simd512, Vector512<float>>(codes, xs);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs) => Vector<Simd256, Vector256<float>>(codes, xs);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V128(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs) => Vector<Simd128, Vector128<float>>(codes, xs);

    /// <summary>How far ahead of its reads the 256-bit kernel prefetches a row's codes. One thread streaming BF16 rows
    /// of 2,048 from memory (V2-Lite's head) leaves the hardware prefetcher behind: `bench stream BF16` on Zen 3, six
    /// runs with distances toggled pass by pass, 18.4–18.9 → 20.2–21.0 GB/s on one thread and 30.1–32.4 → 32.2–34.3
    /// on two at 1 KB (512 bytes gained nothing, 1.5 KB the same as 1 KB, 4 KB lost). The 512-bit kernels, which
    /// that CPU could not measure, take <see cref="Ahead512"/>.</summary>
    private const int PrefetchBytes = 1024;

    /// <summary><see cref="Dot"/>'s loop: four accumulators over blocks of four vectors, one over single vectors,
    /// (s0 + s1) + (s2 + s3) reduced, then the scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe float Vector<TS, TV>(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs) where TS : ISimd<TV> where TV : struct
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        ref float rx = ref MemoryMarshal.GetReference(xs);
        int n = codes.Length / TC.Bytes, i = 0, w = TS.Count;
        int ahead = w == 16 ? Ahead512 : 0; // first and once, not in the loop (Q4KTiles.OneLookAhead)
        TV s0 = TS.Zero, s1 = s0, s2 = s0, s3 = s0;
        for (; i + 4 * w <= n; i += 4 * w)
        {
            if (w == 8 && Sse.IsSupported) Sse.Prefetch0(Unsafe.AsPointer(ref Unsafe.Add(ref rc, i * TC.Bytes + PrefetchBytes)));
            if (ahead != 0) Prefetch64((byte*)Unsafe.AsPointer(ref Unsafe.Add(ref rc, i * TC.Bytes + ahead)));
            s0 = TS.Fma(TC.Load<TS, TV>(ref rc, (nuint)i), TS.Load(ref rx, (nuint)i), s0);
            s1 = TS.Fma(TC.Load<TS, TV>(ref rc, (nuint)(i + w)), TS.Load(ref rx, (nuint)(i + w)), s1);
            s2 = TS.Fma(TC.Load<TS, TV>(ref rc, (nuint)(i + 2 * w)), TS.Load(ref rx, (nuint)(i + 2 * w)), s2);
            s3 = TS.Fma(TC.Load<TS, TV>(ref rc, (nuint)(i + 3 * w)), TS.Load(ref rx, (nuint)(i + 3 * w)), s3);
        }
        for (; i + w <= n; i += w) s0 = TS.Fma(TC.Load<TS, TV>(ref rc, (nuint)i), TS.Load(ref rx, (nuint)i), s0);
        float sum = TS.Sum(TS.Add(TS.Add(s0, s1), TS.Add(s2, s3)));
        for (; i < n; i++) sum += TC.Widen(ref rc, i) * Unsafe.Add(ref rx, i);
        return sum;
    }

    /// <summary>Four tokens against one row, each code widened once: r[k] = Compute(codes, xs[k·stride ..]) bit for bit
    /// (every token keeps its own four accumulators in <see cref="Dot"/>'s order). The 512-bit path only (sixteen
    /// accumulators need AVX-512's 32 registers); <see cref="FourAtOnce"/> says whether it runs here.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Compute4(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs, int stride, Span<float> r)
    {
        CheckTokens(codes, xs, stride, r, 4);
        if (!FourAtOnce) throw new PlatformNotSupportedException("Compute4 needs AVX-512");
        Vector4<Simd512, Vector512<float>>(codes, xs, stride, r);
    }

    /// <summary>Room for <paramref name="tokens"/> tokens' activations <paramref name="stride"/> apart and their results.</summary>
    private static void CheckTokens(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs, int stride, Span<float> r, int tokens)
    {
        long need = (tokens - 1L) * stride + codes.Length / TC.Bytes;
        if (xs.Length < need) ThrowHelper.TooShort(nameof(xs), need, xs.Length);
        if (r.Length < tokens) ThrowHelper.TooShort(nameof(r), tokens, r.Length);
    }

    /// <summary>Whether <see cref="Compute4"/> runs on this CPU (it takes the same path as <see cref="Compute"/>).</summary>
    public static bool FourAtOnce => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>Three tokens against one row, each code widened once: r[k] = Compute(codes, xs[k·stride ..]) bit for bit
    /// (each token its own four accumulators in <see cref="Dot"/>'s order). The 256-bit path only, where
    /// <see cref="Compute4"/> does not run (twelve accumulators, the widened vector and a load fill AVX2's sixteen
    /// registers); <see cref="ThreeAtOnce"/> says whether it runs here.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Compute3(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs, int stride, Span<float> r)
    {
        CheckTokens(codes, xs, stride, r, 3);
        if (!ThreeAtOnce) throw new PlatformNotSupportedException("Compute3 needs AVX2 without AVX-512");
        Vector3(codes, xs, stride, r);
    }

    /// <summary>Whether <see cref="Compute3"/> runs on this CPU: where <see cref="Compute"/> takes the 256-bit path.</summary>
    public static bool ThreeAtOnce => !FourAtOnce && Vector256.IsHardwareAccelerated && Avx2.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Vector3(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs, int stride, Span<float> r)
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        ref float x0 = ref MemoryMarshal.GetReference(xs);
        ref float x1 = ref Unsafe.Add(ref x0, stride), x2 = ref Unsafe.Add(ref x0, 2 * stride);
        int n = codes.Length / TC.Bytes, i = 0;
        const int w = 8;
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        Vector256<float> c0 = a0, c1 = a0, c2 = a0, c3 = a0;
        for (; i + 4 * w <= n; i += 4 * w)
        {
            Sse.Prefetch0(Unsafe.AsPointer(ref Unsafe.Add(ref rc, i * TC.Bytes + PrefetchBytes)));
            Vector256<float> v = TC.Load<Simd256, Vector256<float>>(ref rc, (nuint)i);
            a0 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x0, (nuint)i), a0);
            b0 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x1, (nuint)i), b0);
            c0 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x2, (nuint)i), c0);
            v = TC.Load<Simd256, Vector256<float>>(ref rc, (nuint)(i + w));
            a1 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x0, (nuint)(i + w)), a1);
            b1 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x1, (nuint)(i + w)), b1);
            c1 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x2, (nuint)(i + w)), c1);
            v = TC.Load<Simd256, Vector256<float>>(ref rc, (nuint)(i + 2 * w));
            a2 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x0, (nuint)(i + 2 * w)), a2);
            b2 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x1, (nuint)(i + 2 * w)), b2);
            c2 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x2, (nuint)(i + 2 * w)), c2);
            v = TC.Load<Simd256, Vector256<float>>(ref rc, (nuint)(i + 3 * w));
            a3 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x0, (nuint)(i + 3 * w)), a3);
            b3 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x1, (nuint)(i + 3 * w)), b3);
            c3 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x2, (nuint)(i + 3 * w)), c3);
        }
        for (; i + w <= n; i += w)
        {
            Vector256<float> v = TC.Load<Simd256, Vector256<float>>(ref rc, (nuint)i);
            a0 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x0, (nuint)i), a0);
            b0 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x1, (nuint)i), b0);
            c0 = Simd256.Fma(v, Vector256.LoadUnsafe(ref x2, (nuint)i), c0);
        }
        float sa = Simd256.Sum((a0 + a1) + (a2 + a3)), sb = Simd256.Sum((b0 + b1) + (b2 + b3)), sc = Simd256.Sum((c0 + c1) + (c2 + c3));
        for (; i < n; i++)
        {
            float v = TC.Widen(ref rc, i);
            sa += v * Unsafe.Add(ref x0, i);
            sb += v * Unsafe.Add(ref x1, i);
            sc += v * Unsafe.Add(ref x2, i);
        }
        r[0] = sa;
        r[1] = sb;
        r[2] = sc;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Vector4<TS, TV>(ReadOnlySpan<byte> codes, ReadOnlySpan<float> xs, int stride, Span<float> r) where TS : ISimd<TV> where TV : struct
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        ref float x0 = ref MemoryMarshal.GetReference(xs);
        ref float x1 = ref Unsafe.Add(ref x0, stride), x2 = ref Unsafe.Add(ref x0, 2 * stride), x3 = ref Unsafe.Add(ref x0, 3 * stride);
        int n = codes.Length / TC.Bytes, i = 0, w = TS.Count;
        TV a0 = TS.Zero, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        TV c0 = a0, c1 = a0, c2 = a0, c3 = a0, d0 = a0, d1 = a0, d2 = a0, d3 = a0;
        for (; i + 4 * w <= n; i += 4 * w)
        {
            TV v = TC.Load<TS, TV>(ref rc, (nuint)i);
            a0 = TS.Fma(v, TS.Load(ref x0, (nuint)i), a0); b0 = TS.Fma(v, TS.Load(ref x1, (nuint)i), b0);
            c0 = TS.Fma(v, TS.Load(ref x2, (nuint)i), c0); d0 = TS.Fma(v, TS.Load(ref x3, (nuint)i), d0);
            v = TC.Load<TS, TV>(ref rc, (nuint)(i + w));
            a1 = TS.Fma(v, TS.Load(ref x0, (nuint)(i + w)), a1); b1 = TS.Fma(v, TS.Load(ref x1, (nuint)(i + w)), b1);
            c1 = TS.Fma(v, TS.Load(ref x2, (nuint)(i + w)), c1); d1 = TS.Fma(v, TS.Load(ref x3, (nuint)(i + w)), d1);
            v = TC.Load<TS, TV>(ref rc, (nuint)(i + 2 * w));
            a2 = TS.Fma(v, TS.Load(ref x0, (nuint)(i + 2 * w)), a2); b2 = TS.Fma(v, TS.Load(ref x1, (nuint)(i + 2 * w)), b2);
            c2 = TS.Fma(v, TS.Load(ref x2, (nuint)(i + 2 * w)), c2); d2 = TS.Fma(v, TS.Load(ref x3, (nuint)(i + 2 * w)), d2);
            v = TC.Load<TS, TV>(ref rc, (nuint)(i + 3 * w));
            a3 = TS.Fma(v, TS.Load(ref x0, (nuint)(i + 3 * w)), a3); b3 = TS.Fma(v, TS.Load(ref x1, (nuint)(i + 3 * w)), b3);
            c3 = TS.Fma(v, TS.Load(ref x2, (nuint)(i + 3 * w)), c3); d3 = TS.Fma(v, TS.Load(ref x3, (nuint)(i + 3 * w)), d3);
        }
        for (; i + w <= n; i += w)
        {
            TV v = TC.Load<TS, TV>(ref rc, (nuint)i);
            a0 = TS.Fma(v, TS.Load(ref x0, (nuint)i), a0); b0 = TS.Fma(v, TS.Load(ref x1, (nuint)i), b0);
            c0 = TS.Fma(v, TS.Load(ref x2, (nuint)i), c0); d0 = TS.Fma(v, TS.Load(ref x3, (nuint)i), d0);
        }
        float sa = TS.Sum(TS.Add(TS.Add(a0, a1), TS.Add(a2, a3))), sb = TS.Sum(TS.Add(TS.Add(b0, b1), TS.Add(b2, b3)));
        float sc = TS.Sum(TS.Add(TS.Add(c0, c1), TS.Add(c2, c3))), sd = TS.Sum(TS.Add(TS.Add(d0, d1), TS.Add(d2, d3)));
        for (; i < n; i++)
        {
            float v = TC.Widen(ref rc, i);
            sa += v * Unsafe.Add(ref x0, i);
            sb += v * Unsafe.Add(ref x1, i);
            sc += v * Unsafe.Add(ref x2, i);
            sd += v * Unsafe.Add(ref x3, i);
        }
        r[0] = sa;
        r[1] = sb;
        r[2] = sc;
        r[3] = sd;
    }

    /// <summary>How many bytes ahead of its reads each 512-bit one-token kernel (<see cref="Compute"/> on a row,
    /// <see cref="Quads"/>, <see cref="Panels"/>) prefetches its codes, 0 for not at all: 4 KB on Intel, where the
    /// hardware prefetcher left one core's stream waiting on memory most of the time. Xeon (family 6, model 207),
    /// `bench stream BF16 FP8` from memory, no prefetch against 2 and 4 KB ahead alternating, two rounds, share of the
    /// read probe: BF16 rows (the file layout) 68 / 62% → 99 / 97% on two threads and 52 / 72% → 102 / 93% on one, FP8
    /// rows in the file layout 48 / 55% → 77 / 89% and 43 / 44% → 84 / 89%; FP8 quads 68 / 52% → 93 / 95% and 53 / 53% →
    /// 85 / 84% (2, 3 and 8 KB within the drift of 4; 1 KB short). <see cref="Panels"/> (rows wider than 4,096 columns
    /// not in whole runs of 64) reads the same kind of single stream and takes the same distance unmeasured. Not
    /// measured on AMD's AVX-512 CPUs, which keep the hardware prefetcher alone; <c>DSS_PREFETCH</c> overrides, as for
    /// the tile kernels.</summary>
    internal static readonly int Ahead512 = CpuModel.Prefetch(CpuModel.IsIntel) ? 4096 : 0;

    /// <summary>Every line of 64 codes at <paramref name="p"/> (one for FP8, two for BF16 and F16) into the caches;
    /// prefetches never fault, so past the end of the codes is harmless.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Prefetch64(byte* p)
    {
        Sse.Prefetch0(p);
        if (TC.Bytes == 2) Sse.Prefetch0(p + 64);
    }

    /// <summary>Rows of a group <see cref="Panels"/> takes.</summary>
    public const int PanelRows = 16;

    /// <summary>Sixteen rows interleaved by panels (<see cref="Linear.PanelMatrix{TC}"/>: the rows' codes of columns
    /// [p0, p0 + w) one row after another, w = min(<paramref name="panel"/>, n − p0)) against one token's scaled
    /// activations: row k's result in <paramref name="result"/>[k], bit for bit <see cref="Compute"/>'s on the row —
    /// its four accumulators (in <paramref name="carried"/>, 64 floats a row) take the same steps in the same order
    /// across the panels; the last panel also takes the single-vector steps and the scalar tail. The 512-bit path only
    /// (<see cref="FourAtOnce"/>); <paramref name="panel"/> a multiple of 64.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static unsafe void Panels(byte* group, int n, int panel, float* xs, float* carried, float* result)
    {
        const int rows = PanelRows, w16 = 16;
        int ahead = Ahead512; // first and once, not in the loop (Q4KTiles.OneLookAhead)
        new Span<float>(carried, rows * 64).Clear();
        for (int p0 = 0; p0 < n; p0 += panel)
        {
            int width = Math.Min(panel, n - p0);
            bool last = p0 + panel >= n;
            byte* t = group + (long)rows * p0 * TC.Bytes;
            float* x = xs + p0;
            for (int k = 0; k < rows; k++, t += width * TC.Bytes)
            {
                float* a = carried + 64 * k;
                Vector512<float> s0 = Vector512.Load(a), s1 = Vector512.Load(a + 16), s2 = Vector512.Load(a + 32), s3 = Vector512.Load(a + 48);
                ref byte rt = ref *t;
                int j = 0;
                for (; j + 4 * w16 <= width; j += 4 * w16)
                {
                    if (ahead != 0) Prefetch64(t + j * TC.Bytes + ahead);
                    s0 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref rt, (nuint)j), Vector512.Load(x + j), s0);
                    s1 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref rt, (nuint)(j + w16)), Vector512.Load(x + j + w16), s1);
                    s2 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref rt, (nuint)(j + 2 * w16)), Vector512.Load(x + j + 2 * w16), s2);
                    s3 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref rt, (nuint)(j + 3 * w16)), Vector512.Load(x + j + 3 * w16), s3);
                }
                if (last)
                {
                    for (; j + w16 <= width; j += w16)
                        s0 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref rt, (nuint)j), Vector512.Load(x + j), s0);
                    float sum = Simd512.Sum((s0 + s1) + (s2 + s3));
                    for (; j < width; j++) sum += TC.Widen(ref rt, j) * x[j];
                    result[k] = sum;
                }
                else
                {
                    s0.Store(a);
                    s1.Store(a + 16);
                    s2.Store(a + 32);
                    s3.Store(a + 48);
                }
            }
        }
    }

    /// <summary>Rows of a group <see cref="Quads"/> takes, and the columns of each row's run between the others'.</summary>
    public const int QuadRows = 4, QuadRun = 64;

    /// <summary><paramref name="groups"/> consecutive groups of <paramref name="perGroup"/> quads (four rows interleaved
    /// by runs of 64 codes) against one token's scaled activations, as <see cref="Linear.PanelMatrix{TC}"/> keeps FP8
    /// rows: a group holds, panel after panel of <paramref name="panel"/> columns (the last one narrower where
    /// <paramref name="n"/> is not whole panels), its quads' codes of that panel, quad after quad, each as runs of 64
    /// columns with the four rows' runs in turn. Quad q of group g's row k in <paramref name="result"/>[4 (g ·
    /// perGroup + q) + k], bit for bit <see cref="Compute"/>'s on the row: each row its four accumulators over the
    /// 64-column steps in column order (<see cref="Dot"/>'s), carried across panels in <paramref name="carried"/> (256
    /// floats a quad), reduced as <c>Vector512.Sum</c> reduces (<see cref="Sum4"/>, the four rows at once);
    /// <paramref name="n"/> and <paramref name="panel"/> multiples of 64, so no single-vector step and no tail. The
    /// codes are one stream, each load of the activations serves four rows, and a panel's activations stay in L1 for
    /// every quad of the group (one quad a group with one panel: rows up to 4,096 columns; four quads by panels of 512
    /// for wider rows, whose activations no longer stay in L1 across a whole row). The groups run in one call: rows of
    /// 128 codes (absorbed MLA's W_UK and W_UV per head) otherwise spend more on the reductions and the calls than on
    /// the codes. The 512-bit path only (<see cref="FourAtOnce"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static unsafe void Quads(byte* codes, int groups, int perGroup, int n, int panel, float* xs, float* carried, float* result)
    {
        const int w16 = 16;
        int run = QuadRun * TC.Bytes;
        int ahead = Ahead512; // first and once, not in the loop (Q4KTiles.OneLookAhead)
        for (int g = 0; g < groups; g++, result += perGroup * QuadRows)
            for (int p0 = 0; p0 < n; p0 += panel)
            {
                int end = Math.Min(n, p0 + panel);
                bool first = p0 == 0, last = end == n;
                for (int q = 0; q < perGroup; q++)
                {
                    float* c = carried + 256 * q;
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
                    Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, d0 = default, d1 = default, d2 = default, d3 = default;
                    if (!first)
                    {
                        a0 = Vector512.Load(c); a1 = Vector512.Load(c + 16); a2 = Vector512.Load(c + 32); a3 = Vector512.Load(c + 48);
                        b0 = Vector512.Load(c + 64); b1 = Vector512.Load(c + 80); b2 = Vector512.Load(c + 96); b3 = Vector512.Load(c + 112);
                        c0 = Vector512.Load(c + 128); c1 = Vector512.Load(c + 144); c2 = Vector512.Load(c + 160); c3 = Vector512.Load(c + 176);
                        d0 = Vector512.Load(c + 192); d1 = Vector512.Load(c + 208); d2 = Vector512.Load(c + 224); d3 = Vector512.Load(c + 240);
                    }
                    for (int j = p0; j < end; j += 4 * w16, codes += QuadRows * run)
                    {
                        if (ahead != 0)
                            for (int k = 0; k < QuadRows; k++) Prefetch64(codes + ahead + k * run);
                        Vector512<float> x = Vector512.Load(xs + j);
                        a0 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *codes, 0), x, a0);
                        b0 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + run), 0), x, b0);
                        c0 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 2 * run), 0), x, c0);
                        d0 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 3 * run), 0), x, d0);
                        x = Vector512.Load(xs + j + w16);
                        a1 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *codes, w16), x, a1);
                        b1 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + run), w16), x, b1);
                        c1 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 2 * run), w16), x, c1);
                        d1 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 3 * run), w16), x, d1);
                        x = Vector512.Load(xs + j + 2 * w16);
                        a2 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *codes, 2 * w16), x, a2);
                        b2 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + run), 2 * w16), x, b2);
                        c2 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 2 * run), 2 * w16), x, c2);
                        d2 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 3 * run), 2 * w16), x, d2);
                        x = Vector512.Load(xs + j + 3 * w16);
                        a3 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *codes, 3 * w16), x, a3);
                        b3 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + run), 3 * w16), x, b3);
                        c3 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 2 * run), 3 * w16), x, c3);
                        d3 = Vector512.FusedMultiplyAdd(TC.Load<Simd512, Vector512<float>>(ref *(codes + 3 * run), 3 * w16), x, d3);
                    }
                    if (last)
                    {
                        Sum4((a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3), (c0 + c1) + (c2 + c3), (d0 + d1) + (d2 + d3)).Store(result + QuadRows * q);
                        continue;
                    }
                    a0.Store(c); a1.Store(c + 16); a2.Store(c + 32); a3.Store(c + 48);
                    b0.Store(c + 64); b1.Store(c + 80); b2.Store(c + 96); b3.Store(c + 112);
                    c0.Store(c + 128); c1.Store(c + 144); c2.Store(c + 160); c3.Store(c + 176);
                    d0.Store(c + 192); d1.Store(c + 208); d2.Store(c + 224); d3.Store(c + 240);
                }
            }
    }

    /// <summary>[Sum(v0), Sum(v1), Sum(v2), Sum(v3)], each the bits of <c>Vector512.Sum</c>, which adds in each 128-bit
    /// quarter neighbouring lanes, then the two pairs ((e0 + e1) + (e2 + e3)), then quarters 0 + 1 and 2 + 3, then the
    /// halves: the same additions here for the four vectors at once, in eleven shuffles and adds where four sums take
    /// about a hundred instructions.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Sum4(Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3)
    {
        const byte Even = 0b10_00_10_00, Odd = 0b11_01_11_01;
        // Per quarter: [v0 (e0+e1), v0 (e2+e3), v1 (e0+e1), v1 (e2+e3)], and v2, v3 alike.
        Vector512<float> p01 = Avx512F.Shuffle(v0, v1, Even) + Avx512F.Shuffle(v0, v1, Odd);
        Vector512<float> p23 = Avx512F.Shuffle(v2, v3, Even) + Avx512F.Shuffle(v2, v3, Odd);
        // Per quarter: the quarter's sum of v0, v1, v2, v3.
        Vector512<float> quarters = Avx512F.Shuffle(p01, p23, Even) + Avx512F.Shuffle(p01, p23, Odd);
        // Quarter 0: quarters 0 + 1; quarter 2: quarters 2 + 3.
        Vector512<float> halves = quarters + Avx512F.Shuffle4x128(quarters, quarters, 0b10_11_00_01);
        return halves.GetLower().GetLower() + halves.GetUpper().GetLower();
    }

    /// <summary>The product without widening, for rows with special codes and activations whose scaled values would
    /// overflow: Σ value(q[c]) · (x[c] · scales[c / blockCols]) in order, in float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Unwidened(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, ReadOnlySpan<float> x)
    {
        ref byte rc = ref MemoryMarshal.GetReference(codes);
        float s = 0;
        for (int i = 0; i < codes.Length / TC.Bytes; i++) s += TC.Value(ref rc, i) * (x[i] * scales[i / blockCols]);
        return s;
    }
}

/// <summary>FP8 rows dequantised (<see cref="NumberFormats.Fp8Row"/>: value · scale, rounded once), vectorised with
/// the same widening: the widened code times scale · 2¹²⁰ forms the same real product. Bit-identical, NaN codes
/// included.</summary>
internal static class Fp8Rows
{
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
            TV scale = TS.Broadcast(scales[b] * Fp8Codes.Factor);
            for (; i + w <= end; i += w) TS.Store(TS.Multiply(TS.LoadFp8(ref rc, (nuint)i), scale), ref rd, (nuint)i);
            for (; i < end; i++) Unsafe.Add(ref rd, i) = NumberFormats.F8E4M3ToFloat(Unsafe.Add(ref rc, i)) * scales[b];
        }
        if (Fp8Codes.HasSpecialCode(codes))
            for (int c = 0; c < n; c++)
                if ((codes[c] & 0x7F) == 0x7F) dst[c] = float.NaN;
    }
}

/// <summary>FP8 rows for AVX2 without AVX-512, each run of 32 codes stored transposed (<see cref="Arrange"/>: code
/// 8k + j at byte 4j + k), so that one 32-byte load widens into Dot's four vectors with in-lane shifts alone. Sign-
/// extending eight codes to eight int32 lanes (<c>vpmovsxbd</c>) crosses the 128-bit halves, which Zen 3 does about
/// once in 1.3 cycles: the file layout's widening (extend, shift, mask) ran 1.4 cycles per eight codes. Here a dword's
/// byte k is code 8k + j of lane j: byte 3 shifted right arithmetically by 4 within its 16-bit half (bytes 2–3)
/// puts the sign in bit 31 and the seven other bits at 20–26, the E4M3 code widened as <see cref="Fp8Codes"/> widens
/// it once masked with 0x87F00000; byte 2 first multiplied by 256 within that half (<c>vpmullw</c>, a pipe the shifts
/// do not use), bytes 1 and 0 likewise, then moved up by 16. Four shifts, one multiply and four masks widen 32 codes,
/// where the file layout spends four extends, four shifts and four masks. The same widened values meet the same
/// activations in the same accumulators in the same order as <see cref="WidenedDot{TC}.Compute"/> on the file layout's
/// row (256-bit path), so the bits are the same.</summary>
internal static unsafe class Fp8Runs
{
    /// <summary>Codes per run (a 32-byte load).</summary>
    public const int Run = 32;

    /// <summary>Whether this CPU has the kernel (AVX2).</summary>
    public static bool IsSupported => Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported;

    /// <summary>How far ahead of its reads <see cref="Compute"/> prefetches: one thread streaming rows from memory
    /// leaves the hardware prefetcher behind at this kernel's pace.</summary>
    private const int PrefetchBytes = 2048;

    /// <summary>A row in the file layout (a whole number of runs) into runs: <paramref name="runs"/>[4j + k] =
    /// <paramref name="row"/>[8k + j] within each run (a 4 × 8 byte transpose: the run's four 8-byte groups
    /// interleaved byte by byte, then 16-bit pair by pair).</summary>
    public static void Arrange(ReadOnlySpan<byte> row, Span<byte> runs)
    {
        if (runs.Length < row.Length) ThrowHelper.TooShort(nameof(runs), row.Length, runs.Length);
        ref byte src = ref MemoryMarshal.GetReference(row);
        ref byte dst = ref MemoryMarshal.GetReference(runs);
        for (int r0 = 0; r0 + Run <= row.Length; r0 += Run)
        {
            Vector128<byte> g01 = Vector128.LoadUnsafe(ref src, (nuint)r0), g23 = Vector128.LoadUnsafe(ref src, (nuint)(r0 + 16));
            // Bytes j of groups 0 and 1 side by side, and of groups 2 and 3; then the two pairs of each j together.
            Vector128<ushort> p01 = Sse2.UnpackLow(g01, Sse2.ShiftRightLogical128BitLane(g01, 8)).AsUInt16();
            Vector128<ushort> p23 = Sse2.UnpackLow(g23, Sse2.ShiftRightLogical128BitLane(g23, 8)).AsUInt16();
            Sse2.UnpackLow(p01, p23).AsByte().StoreUnsafe(ref dst, (nuint)r0);
            Sse2.UnpackHigh(p01, p23).AsByte().StoreUnsafe(ref dst, (nuint)(r0 + 16));
        }
    }

    /// <summary>The file layout's row back from runs (<see cref="Arrange"/> undone: the same transpose, 8 × 4).</summary>
    public static void Restore(ReadOnlySpan<byte> runs, Span<byte> row)
    {
        if (row.Length < runs.Length) ThrowHelper.TooShort(nameof(row), runs.Length, row.Length);
        ref byte src = ref MemoryMarshal.GetReference(runs);
        ref byte dst = ref MemoryMarshal.GetReference(row);
        Vector128<byte> gather = Vector128.Create((byte)0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (int r0 = 0; r0 + Run <= runs.Length; r0 += Run)
        {
            // Each half holds lanes j = 0–3 or 4–7 of every group: gathered by group, then the halves' groups joined.
            Vector128<uint> lo = Ssse3.Shuffle(Vector128.LoadUnsafe(ref src, (nuint)r0), gather).AsUInt32();
            Vector128<uint> hi = Ssse3.Shuffle(Vector128.LoadUnsafe(ref src, (nuint)(r0 + 16)), gather).AsUInt32();
            Sse2.UnpackLow(lo, hi).AsByte().StoreUnsafe(ref dst, (nuint)r0);
            Sse2.UnpackHigh(lo, hi).AsByte().StoreUnsafe(ref dst, (nuint)(r0 + 16));
        }
    }

    /// <summary>Σ widened(code c) · xs[c] over a row of <paramref name="n"/> codes in runs (n a multiple of
    /// <see cref="Run"/>): <see cref="WidenedDot{TC}.Compute"/>'s bits on the file layout's row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Compute(byte* runs, int n, float* xs)
    {
        Vector256<float> s0 = Vector256<float>.Zero, s1 = s0, s2 = s0, s3 = s0;
        int i = 0;
        for (; i + 2 * Run <= n; i += 2 * Run)
        {
            Sse.Prefetch0(runs + i + PrefetchBytes);
            Step(runs + i, xs + i, ref s0, ref s1, ref s2, ref s3);
            Step(runs + i + Run, xs + i + Run, ref s0, ref s1, ref s2, ref s3);
        }
        if (i < n) Step(runs + i, xs + i, ref s0, ref s1, ref s2, ref s3);
        return Simd256.Sum((s0 + s1) + (s2 + s3));
    }

    /// <summary>Two tokens against one row in runs, each run widened once: <paramref name="y"/>[0] and [1] the bits
    /// <see cref="Compute"/> gives each token alone (each keeps its own four accumulators).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Compute2(byte* runs, int n, float* xs0, float* xs1, float* y)
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int i = 0; i < n; i += Run)
        {
            Widen(runs + i, out Vector256<float> w0, out Vector256<float> w1, out Vector256<float> w2, out Vector256<float> w3);
            a0 = Vector256.FusedMultiplyAdd(w0, Vector256.Load(xs0 + i), a0);
            b0 = Vector256.FusedMultiplyAdd(w0, Vector256.Load(xs1 + i), b0);
            a1 = Vector256.FusedMultiplyAdd(w1, Vector256.Load(xs0 + i + 8), a1);
            b1 = Vector256.FusedMultiplyAdd(w1, Vector256.Load(xs1 + i + 8), b1);
            a2 = Vector256.FusedMultiplyAdd(w2, Vector256.Load(xs0 + i + 16), a2);
            b2 = Vector256.FusedMultiplyAdd(w2, Vector256.Load(xs1 + i + 16), b2);
            a3 = Vector256.FusedMultiplyAdd(w3, Vector256.Load(xs0 + i + 24), a3);
            b3 = Vector256.FusedMultiplyAdd(w3, Vector256.Load(xs1 + i + 24), b3);
        }
        y[0] = Simd256.Sum((a0 + a1) + (a2 + a3));
        y[1] = Simd256.Sum((b0 + b1) + (b2 + b3));
    }

    /// <summary>Three tokens against one row in runs, each run widened once and each widened vector used by the three
    /// before the next is made (twelve sums, the two halves and the vector in hand fill the sixteen registers):
    /// <paramref name="y"/>[0], [1] and [2] the bits <see cref="Compute"/> gives each token alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Compute3(byte* runs, int n, float* xs0, float* xs1, float* xs2, float* y)
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        Vector256<float> c0 = a0, c1 = a0, c2 = a0, c3 = a0;
        for (int i = 0; i < n; i += Run)
        {
            Halves(runs + i, out Vector256<int> even, out Vector256<int> odd);
            Vector256<float> w = Low(even);
            a0 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs0 + i), a0);
            b0 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs1 + i), b0);
            c0 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs2 + i), c0);
            w = Low(odd);
            a1 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs0 + i + 8), a1);
            b1 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs1 + i + 8), b1);
            c1 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs2 + i + 8), c1);
            w = High(even);
            a2 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs0 + i + 16), a2);
            b2 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs1 + i + 16), b2);
            c2 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs2 + i + 16), c2);
            w = High(odd);
            a3 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs0 + i + 24), a3);
            b3 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs1 + i + 24), b3);
            c3 = Vector256.FusedMultiplyAdd(w, Vector256.Load(xs2 + i + 24), c3);
        }
        y[0] = Simd256.Sum((a0 + a1) + (a2 + a3));
        y[1] = Simd256.Sum((b0 + b1) + (b2 + b3));
        y[2] = Simd256.Sum((c0 + c1) + (c2 + c3));
    }

    /// <summary>One run: Dot's four accumulators each take one vector of eight widened codes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step(byte* run, float* x, ref Vector256<float> s0, ref Vector256<float> s1, ref Vector256<float> s2, ref Vector256<float> s3)
    {
        Widen(run, out Vector256<float> w0, out Vector256<float> w1, out Vector256<float> w2, out Vector256<float> w3);
        s0 = Vector256.FusedMultiplyAdd(w0, Vector256.Load(x), s0);
        s1 = Vector256.FusedMultiplyAdd(w1, Vector256.Load(x + 8), s1);
        s2 = Vector256.FusedMultiplyAdd(w2, Vector256.Load(x + 16), s2);
        s3 = Vector256.FusedMultiplyAdd(w3, Vector256.Load(x + 24), s3);
    }

    /// <summary>A run's 32 codes widened: <paramref name="w0"/> codes 0–7 (bytes 0 of the dwords), w1 8–15 (bytes 1),
    /// w2 16–23 (bytes 2), w3 24–31 (bytes 3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Widen(byte* run, out Vector256<float> w0, out Vector256<float> w1, out Vector256<float> w2, out Vector256<float> w3)
    {
        Halves(run, out Vector256<int> even, out Vector256<int> odd);
        (w0, w1, w2, w3) = (Low(even), Low(odd), High(even), High(odd));
    }

    /// <summary>A run's dwords with bytes 0 and 2 (<paramref name="even"/>) or 1 and 3 (<paramref name="odd"/>) at the
    /// top of their 16-bit halves, shifted right arithmetically by 4: each half's code sign-extended into bits 11–15.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Halves(byte* run, out Vector256<int> even, out Vector256<int> odd)
    {
        Vector256<short> halves = Vector256.Load(run).AsInt16();
        odd = Vector256.ShiftRightArithmetic(halves, 4).AsInt32();
        even = Vector256.ShiftRightArithmetic(halves * Vector256.Create((short)256), 4).AsInt32();
    }

    /// <summary>The codes of the low halves of <see cref="Halves"/>' dwords widened (moved up, then masked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Low(Vector256<int> h) => (Vector256.ShiftLeft(h, 16) & Vector256.Create(unchecked((int)0x87F00000))).AsSingle();

    /// <summary>The codes of the high halves widened (masked in place).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> High(Vector256<int> h) => (h & Vector256.Create(unchecked((int)0x87F00000))).AsSingle();
}
