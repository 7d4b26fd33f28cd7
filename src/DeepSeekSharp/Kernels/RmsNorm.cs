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

    /// <summary>The derivative of <see cref="Forward"/>, per row with r = 1 / sqrt(mean(x²) + eps):
    /// dweight += dy ⊙ x · r (summed over rows, in row order); dx += r · (weight ⊙ dy) − (r³ / d) · Σ(weight ⊙ dy ⊙ x) · x.
    /// In the forward pass this was: y = x · r ⊙ weight.</summary>
    /// <param name="dx">[rows, d] accumulated into</param>
    /// <param name="dweight">[d] accumulated into</param>
    /// <param name="dy">[rows, d]</param>
    /// <param name="x">[rows, d] the forward input</param>
    public static void Backward(Span<float> dx, Span<float> dweight, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps)
    {
        int d = weight.Length;
        if (d == 0 || x.Length % d != 0) ThrowHelper.LengthMismatch(nameof(x), d, x.Length);
        if (dy.Length != x.Length) ThrowHelper.LengthMismatch(nameof(dy), x.Length, dy.Length);
        if (dx.Length != x.Length) ThrowHelper.LengthMismatch(nameof(dx), x.Length, dx.Length);
        if (dweight.Length != d) ThrowHelper.LengthMismatch(nameof(dweight), d, dweight.Length);
        for (int row = 0; row < x.Length / d; row++)
        {
            ReadOnlySpan<float> xr = x.Slice(row * d, d), dyr = dy.Slice(row * d, d);
            Span<float> dxr = dx.Slice(row * d, d);
            float r = 1f / MathF.Sqrt(Dot.Compute(xr, xr) / d + eps);
            float dot = 0; // Σ weight ⊙ dy ⊙ x
            for (int i = 0; i < d; i++) dot += weight[i] * dyr[i] * xr[i];
            float c = r * r * r / d * dot;
            for (int i = 0; i < d; i++)
            {
                dweight[i] += dyr[i] * xr[i] * r;
                dxr[i] += r * weight[i] * dyr[i] - c * xr[i];
            }
        }
    }
}
