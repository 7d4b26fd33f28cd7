using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels;

/// <summary>e^x for float32 in 512-bit, 256-bit and scalar form with the same operations in the same order, so every
/// width gives the same bits (a value's result never depends on whether it fell in a vector body or a tail).
/// Cephes' expf: n = round(x·log2 e), r = x − n·ln 2 in two parts, a degree-5 polynomial for e^r, then 2^n applied as
/// two factors 2^⌊n/2⌋·2^(n−⌊n/2⌋) so overflow gives ∞ and underflow goes through the subnormals to 0. Within 2 ulp of
/// the correctly rounded value over the float range (tested against double). Not TensorPrimitives.Exp: its bits may
/// differ between vector body and tail, and in a short-lived process (a first prefill) it ran up to ~40× slower than
/// warmed up, before the JIT had tiered it (warmed, BenchmarkDotNet: within 20% of this).</summary>
public static class FastExp
{
    private const float Log2E = 1.44269504088896341f, Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    private const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f, P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;
    private const float Lo = -104f, Hi = 89f; // beyond these e^x is 0 or ∞ in float; clamping keeps n in range

    /// <summary>The specification the vector forms equal bit for bit.</summary>
    public static float Exp(float x)
    {
        if (float.IsNaN(x)) return x;
        x = Math.Clamp(x, Lo, Hi);
        float n = MathF.Round(x * Log2E, MidpointRounding.ToEven);
        float r = MathF.FusedMultiplyAdd(n, -Ln2Lo, MathF.FusedMultiplyAdd(n, -Ln2Hi, x));
        float p = MathF.FusedMultiplyAdd(MathF.FusedMultiplyAdd(MathF.FusedMultiplyAdd(MathF.FusedMultiplyAdd(MathF.FusedMultiplyAdd(
            P0, r, P1), r, P2), r, P3), r, P4), r, P5);
        float y = MathF.FusedMultiplyAdd(p, r * r, r) + 1f;
        int ni = (int)n, n1 = ni >> 1;
        return y * BitConverter.Int32BitsToSingle((n1 + 127) << 23) * BitConverter.Int32BitsToSingle((ni - n1 + 127) << 23);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x) => Exp<Simd512, Vector512<float>>(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x) => Exp<Simd256, Vector256<float>>(x);

    /// <summary><see cref="Exp(float)"/> in every lane: the same operations in the same order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TV Exp<TS, TV>(TV x) where TS : ISimd<TV> where TV : struct
    {
        TV c = TS.Min(TS.Max(x, TS.Broadcast(Lo)), TS.Broadcast(Hi));
        TV n = TS.Round(TS.Multiply(c, TS.Broadcast(Log2E)));
        TV r = TS.Fma(n, TS.Broadcast(-Ln2Lo), TS.Fma(n, TS.Broadcast(-Ln2Hi), c));
        TV p = TS.Fma(TS.Fma(TS.Fma(TS.Fma(TS.Fma(TS.Broadcast(P0), r, TS.Broadcast(P1)), r, TS.Broadcast(P2)), r, TS.Broadcast(P3)),
            r, TS.Broadcast(P4)), r, TS.Broadcast(P5));
        TV y = TS.Add(TS.Fma(p, TS.Multiply(r, r), r), TS.One);
        return TS.KeepNaN(x, TS.ScaleByPowerOfTwo(y, n)); // NaN stays NaN
    }
}
