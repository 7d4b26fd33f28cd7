using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>float32 activations against bfloat16 weights, widened in registers (no float32 copy of the weights).
/// The summation order is fixed by the length alone, as for <see cref="Dot"/>.</summary>
public static class Bf16Dot
{
    public static float Compute(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        if (w.Length != x.Length) ThrowHelper.LengthMismatch(nameof(x), w.Length, x.Length);
        if (Avx512F.IsSupported) return V512(w, x);
        if (Avx2.IsSupported) return V256(w, x);
        return Scalar(w, x);
    }

    internal static float Scalar(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x)
    {
        float s = 0;
        for (int i = 0; i < w.Length; i++) s += BitConverter.Int32BitsToSingle(w[i] << 16) * x[i];
        return s;
    }

    internal static float V512(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x) => Vector<Simd512, Vector512<float>>(w, x);

    internal static float V256(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x) => Vector<Simd256, Vector256<float>>(w, x);

    /// <summary>Two accumulators over pairs of vectors, summed and reduced, then the scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Vector<TS, TV>(ReadOnlySpan<ushort> w, ReadOnlySpan<float> x) where TS : ISimd<TV> where TV : struct
    {
        ref ushort rw = ref MemoryMarshal.GetReference(w);
        ref float rx = ref MemoryMarshal.GetReference(x);
        int n = w.Length, i = 0, lanes = TS.Count;
        TV s0 = TS.Zero, s1 = s0;
        for (; i + 2 * lanes <= n; i += 2 * lanes)
        {
            s0 = TS.Fma(TS.LoadBf16(ref rw, (nuint)i), TS.Load(ref rx, (nuint)i), s0);
            s1 = TS.Fma(TS.LoadBf16(ref rw, (nuint)(i + lanes)), TS.Load(ref rx, (nuint)(i + lanes)), s1);
        }
        float sum = TS.Sum(TS.Add(s0, s1));
        for (; i < n; i++) sum += BitConverter.Int32BitsToSingle(Unsafe.Add(ref rw, i) << 16) * Unsafe.Add(ref rx, i);
        return sum;
    }
}
