using System.Numerics.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>y = x / sqrt(mean(x²) + eps) ⊙ weight, per row of length <c>weight.Length</c>.</summary>
public static class RmsNorm
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, float eps)
    {
        int d = weight.Length;
        if (d == 0 || x.Length % d != 0) ThrowHelper.LengthMismatch(nameof(x), d, x.Length);
        if (y.Length < x.Length) ThrowHelper.TooShort(nameof(y), x.Length, y.Length);
        for (int r = 0; r < x.Length / d; r++)
        {
            ReadOnlySpan<float> xr = x.Slice(r * d, d);
            Span<float> yr = y.Slice(r * d, d);
            float ss = Dot.Compute(xr, xr); // fixed order: independent of alignment
            float inv = 1f / MathF.Sqrt(ss / d + eps);
            TensorPrimitives.Multiply(xr, inv, yr);
            TensorPrimitives.Multiply(yr, weight, yr);
        }
    }
}
