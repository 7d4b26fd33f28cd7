using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels;

/// <summary>y += a · x, every element one fused multiply-add (vector body and scalar tail alike), so results do not
/// depend on where the arrays sit in memory.</summary>
public static class Axpy
{
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void Compute(ReadOnlySpan<float> x, float a, Span<float> y)
    {
        if (x.Length != y.Length) ThrowHelper.LengthMismatch(nameof(y), x.Length, y.Length);
        ref float rx = ref MemoryMarshal.GetReference(x);
        ref float ry = ref MemoryMarshal.GetReference(y);
        int n = x.Length, i = 0;
        if (Vector512.IsHardwareAccelerated) i = Body<Simd512, Vector512<float>>(ref rx, a, ref ry, n);
        else if (Vector256.IsHardwareAccelerated) i = Body<Simd256, Vector256<float>>(ref rx, a, ref ry, n);
        else if (Simd128.IsFast) i = V128(ref rx, a, ref ry, n);
        for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(x[i], a, y[i]);
    }

    /// <summary>The 128-bit body (ARM64; tests on x86).</summary>
    internal static int V128(ref float rx, float a, ref float ry, int n) => Body<Simd128, Vector128<float>>(ref rx, a, ref ry, n);

    /// <summary>The whole vectors, one fused multiply-add per element; returns the index of the first element left for
    /// the tail.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static int Body<TS, TV>(ref float rx, float a, ref float ry, int n) where TS : ISimd<TV> where TV : struct
    {
        TV va = TS.Broadcast(a);
        int i = 0;
        for (; i + TS.Count <= n; i += TS.Count) TS.Store(TS.Fma(TS.Load(ref rx, (nuint)i), va, TS.Load(ref ry, (nuint)i)), ref ry, (nuint)i);
        return i;
    }

    /// <summary>The specification.</summary>
    internal static void Scalar(ReadOnlySpan<float> x, float a, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = MathF.FusedMultiplyAdd(x[i], a, y[i]);
    }
}
