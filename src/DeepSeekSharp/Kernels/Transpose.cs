namespace DeepSeekSharp.Kernels;

/// <summary>y[c, r] = x[r, c]: a small row-major matrix transposed (per-head weight rearrangements at load).</summary>
public static class Transpose
{
    /// <param name="x">[rows, cols]</param>
    /// <param name="y">[cols, rows]</param>
    public static void Compute(ReadOnlySpan<float> x, int rows, int cols, Span<float> y)
    {
        if (x.Length != rows * cols) ThrowHelper.LengthMismatch(nameof(x), (long)rows * cols, x.Length);
        if (y.Length != rows * cols) ThrowHelper.LengthMismatch(nameof(y), (long)rows * cols, y.Length);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) y[c * rows + r] = x[r * cols + c];
    }
}
