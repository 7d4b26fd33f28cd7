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
    public static Vector512<float> Exp(Vector512<float> x)
    {
        Vector512<float> c = Vector512.Min(Vector512.Max(x, Vector512.Create(Lo)), Vector512.Create(Hi));
        Vector512<float> n = Vector512.Round(c * Log2E);
        Vector512<float> r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Lo), Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Hi), c));
        Vector512<float> p = Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(
            Vector512.FusedMultiplyAdd(Vector512.Create(P0), r, Vector512.Create(P1)), r, Vector512.Create(P2)), r, Vector512.Create(P3)),
            r, Vector512.Create(P4)), r, Vector512.Create(P5));
        Vector512<float> y = Vector512.FusedMultiplyAdd(p, r * r, r) + Vector512<float>.One;
        Vector512<int> ni = Vector512.ConvertToInt32(n), n1 = Vector512.ShiftRightArithmetic(ni, 1);
        Vector512<float> result = y * Vector512.ShiftLeft(n1 + Vector512.Create(127), 23).AsSingle()
                                    * Vector512.ShiftLeft(ni - n1 + Vector512.Create(127), 23).AsSingle();
        return Vector512.ConditionalSelect(Vector512.Equals(x, x), result, x); // NaN stays NaN
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        Vector256<float> c = Vector256.Min(Vector256.Max(x, Vector256.Create(Lo)), Vector256.Create(Hi));
        Vector256<float> n = Vector256.Round(c * Log2E);
        Vector256<float> r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2Lo), Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2Hi), c));
        Vector256<float> p = Vector256.FusedMultiplyAdd(Vector256.FusedMultiplyAdd(Vector256.FusedMultiplyAdd(Vector256.FusedMultiplyAdd(
            Vector256.FusedMultiplyAdd(Vector256.Create(P0), r, Vector256.Create(P1)), r, Vector256.Create(P2)), r, Vector256.Create(P3)),
            r, Vector256.Create(P4)), r, Vector256.Create(P5));
        Vector256<float> y = Vector256.FusedMultiplyAdd(p, r * r, r) + Vector256<float>.One;
        Vector256<int> ni = Vector256.ConvertToInt32(n), n1 = Vector256.ShiftRightArithmetic(ni, 1);
        Vector256<float> result = y * Vector256.ShiftLeft(n1 + Vector256.Create(127), 23).AsSingle()
                                    * Vector256.ShiftLeft(ni - n1 + Vector256.Create(127), 23).AsSingle();
        return Vector256.ConditionalSelect(Vector256.Equals(x, x), result, x);
    }
}
