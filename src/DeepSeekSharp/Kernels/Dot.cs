using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels;

/// <summary>Float32 dot product with a summation order fixed by the length alone — never by memory alignment or
/// thread — so a row gives bit-identical results wherever it sits (alone or in a batch).</summary>
public static class Dot
{
    public static float Compute(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length) ThrowHelper.LengthMismatch(nameof(b), a.Length, b.Length);
        if (Vector512.IsHardwareAccelerated) return V512(a, b);
        if (Vector256.IsHardwareAccelerated) return V256(a, b);
        if (Simd128.IsFast) return V128(a, b);
        return Scalar(a, b);
    }

    /// <summary>The specification: sequential float32 sum of products.</summary>
    internal static float Scalar(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        float s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    internal static float V512(ReadOnlySpan<float> a, ReadOnlySpan<float> b) => Vector<Simd512, Vector512<float>>(a, b);

    internal static float V256(ReadOnlySpan<float> a, ReadOnlySpan<float> b) => Vector<Simd256, Vector256<float>>(a, b);

    internal static float V128(ReadOnlySpan<float> a, ReadOnlySpan<float> b) => Vector<Simd128, Vector128<float>>(a, b);

    /// <summary>Four accumulators over blocks of four vectors, then one over whole vectors, summed as
    /// (s0 + s1) + (s2 + s3) and reduced, then the scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Vector<TS, TV>(ReadOnlySpan<float> a, ReadOnlySpan<float> b) where TS : ISimd<TV> where TV : struct
    {
        ref float ra = ref MemoryMarshal.GetReference(a);
        ref float rb = ref MemoryMarshal.GetReference(b);
        int n = a.Length, i = 0, w = TS.Count;
        TV s0 = TS.Zero, s1 = s0, s2 = s0, s3 = s0;
        for (; i + 4 * w <= n; i += 4 * w)
        {
            s0 = TS.Fma(TS.Load(ref ra, (nuint)i), TS.Load(ref rb, (nuint)i), s0);
            s1 = TS.Fma(TS.Load(ref ra, (nuint)(i + w)), TS.Load(ref rb, (nuint)(i + w)), s1);
            s2 = TS.Fma(TS.Load(ref ra, (nuint)(i + 2 * w)), TS.Load(ref rb, (nuint)(i + 2 * w)), s2);
            s3 = TS.Fma(TS.Load(ref ra, (nuint)(i + 3 * w)), TS.Load(ref rb, (nuint)(i + 3 * w)), s3);
        }
        for (; i + w <= n; i += w) s0 = TS.Fma(TS.Load(ref ra, (nuint)i), TS.Load(ref rb, (nuint)i), s0);
        float sum = TS.Sum(TS.Add(TS.Add(s0, s1), TS.Add(s2, s3)));
        for (; i < n; i++) sum += Unsafe.Add(ref ra, i) * Unsafe.Add(ref rb, i);
        return sum;
    }
}
