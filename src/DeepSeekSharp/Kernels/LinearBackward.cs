namespace DeepSeekSharp.Kernels;

/// <summary>The derivative of a float32 linear layer y[t] = W x[t] (W [rows, cols], row-major) over n tokens, as llm.c's
/// matmul_backward: dx[t] += Σ_o dy[t, o] · W[o] and dW[o] += Σ_t dy[t, o] · x[t], tokens added in order, so a weight's
/// gradient does not depend on how rows are split over threads.</summary>
public static class LinearBackward
{
    /// <param name="dx">[n, cols] accumulated into</param>
    /// <param name="dw">[rows, cols] accumulated into</param>
    /// <param name="dy">[n, rows]</param>
    /// <param name="x">[n, cols] the forward input</param>
    /// <param name="w">[rows, cols]</param>
    public static void Compute(Span<float> dx, Span<float> dw, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> w,
        int n, int rows, int cols)
    {
        if (x.Length != n * cols) ThrowHelper.LengthMismatch(nameof(x), (long)n * cols, x.Length);
        if (dx.Length != n * cols) ThrowHelper.LengthMismatch(nameof(dx), (long)n * cols, dx.Length);
        if (dy.Length != n * rows) ThrowHelper.LengthMismatch(nameof(dy), (long)n * rows, dy.Length);
        if (w.Length != rows * cols) ThrowHelper.LengthMismatch(nameof(w), (long)rows * cols, w.Length);
        if (dw.Length != rows * cols) ThrowHelper.LengthMismatch(nameof(dw), (long)rows * cols, dw.Length);
        for (int t = 0; t < n; t++)
            for (int o = 0; o < rows; o++)
            {
                float g = dy[t * rows + o];
                Axpy.Compute(w.Slice(o * cols, cols), g, dx.Slice(t * cols, cols));
            }
        for (int o = 0; o < rows; o++)
            for (int t = 0; t < n; t++)
            {
                float g = dy[t * rows + o];
                Axpy.Compute(x.Slice(t * cols, cols), g, dw.Slice(o * cols, cols));
            }
    }
}
