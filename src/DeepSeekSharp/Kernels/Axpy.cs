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
        if (Vector512.IsHardwareAccelerated)
        {
            var va = Vector512.Create(a);
            for (; i + 16 <= n; i += 16)
                Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref rx, (nuint)i), va, Vector512.LoadUnsafe(ref ry, (nuint)i)).StoreUnsafe(ref ry, (nuint)i);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var va = Vector256.Create(a);
            for (; i + 8 <= n; i += 8)
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rx, (nuint)i), va, Vector256.LoadUnsafe(ref ry, (nuint)i)).StoreUnsafe(ref ry, (nuint)i);
        }
        else if (Simd128.IsFast) i = V128(ref rx, a, ref ry, n);
        for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(x[i], a, y[i]);
    }

    /// <summary>The 128-bit body (ARM64; tests on x86); returns the index of the first element left for the tail.</summary>
    internal static int V128(ref float rx, float a, ref float ry, int n)
    {
        var va = Vector128.Create(a);
        int i = 0;
        for (; i + 4 <= n; i += 4)
            Vector128.FusedMultiplyAdd(Vector128.LoadUnsafe(ref rx, (nuint)i), va, Vector128.LoadUnsafe(ref ry, (nuint)i)).StoreUnsafe(ref ry, (nuint)i);
        return i;
    }

    /// <summary>The specification.</summary>
    internal static void Scalar(ReadOnlySpan<float> x, float a, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = MathF.FusedMultiplyAdd(x[i], a, y[i]);
    }
}
