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
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            Vector512<float> m = Vector512.Create(max), acc = Vector512<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                Vector512<float> e = FastExp.Exp(Vector512.LoadUnsafe(ref r, (nuint)i) - m);
                e.StoreUnsafe(ref r, (nuint)i);
                acc += e;
            }
            for (int l = 0; l < 16; l++) sum += acc.GetElement(l);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Vector256<float> m = Vector256.Create(max), acc = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                Vector256<float> e = FastExp.Exp(Vector256.LoadUnsafe(ref r, (nuint)i) - m);
                e.StoreUnsafe(ref r, (nuint)i);
                acc += e;
            }
            for (int l = 0; l < 8; l++) sum += acc.GetElement(l);
        }
        for (; i < n; i++)
        {
            float e = FastExp.Exp(Unsafe.Add(ref r, i) - max);
            Unsafe.Add(ref r, i) = e;
            sum += e;
        }
        return sum;
    }
}
