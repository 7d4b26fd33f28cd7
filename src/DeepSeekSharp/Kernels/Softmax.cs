using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels;

/// <summary>In-place numerically stable softmax over one row: e_i = exp(x_i − max), then e_i · (1 / Σe). The sum's
/// order is fixed by the length alone (lane partials over whole vectors, lanes added in order, then the tail), so a row
/// gives the same bits wherever it sits in memory.</summary>
public static class Softmax
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void InPlace(Span<float> x)
    {
        if (x.IsEmpty) return;
        float sum = ExpInPlace(x, out _);
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }

    /// <summary>x_i ← exp(x_i − max) in place; returns Σ of them (in <see cref="InPlace"/>'s order) and the max (the
    /// unnormalised half of a softmax, for combining blocks of a row).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float ExpInPlace(Span<float> x, out float max)
    {
        max = float.NegativeInfinity;
        if (x.IsEmpty) return 0;
        max = TensorPrimitives.Max(x);
        ref float r = ref MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16) i = ExpBody<Simd512, Vector512<float>>(ref r, n, max, ref sum);
        else if (Vector256.IsHardwareAccelerated && n >= 8) i = ExpBody<Simd256, Vector256<float>>(ref r, n, max, ref sum);
        else if (Simd128.IsFast && n >= 4) i = ExpBody<Simd128, Vector128<float>>(ref r, n, max, ref sum);
        for (; i < n; i++)
        {
            float e = FastExp.Exp(Unsafe.Add(ref r, i) - max);
            Unsafe.Add(ref r, i) = e;
            sum += e;
        }
        return sum;
    }

    /// <summary>The whole vectors of <see cref="ExpInPlace"/>: lane partial sums, then the lanes added in order to
    /// <paramref name="sum"/>. Returns the index of the first element left for the tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ExpBody<TS, TV>(ref float r, int n, float max, ref float sum) where TS : ISimd<TV> where TV : struct
    {
        TV m = TS.Broadcast(max), acc = TS.Zero;
        int i = 0;
        for (; i + TS.Count <= n; i += TS.Count)
        {
            TV e = FastExp.Exp<TS, TV>(TS.Subtract(TS.Load(ref r, (nuint)i), m));
            TS.Store(e, ref r, (nuint)i);
            acc = TS.Add(acc, e);
        }
        for (int l = 0; l < TS.Count; l++) sum += TS.Lane(acc, l);
        return i;
    }
}
