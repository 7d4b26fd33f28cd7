using System.Numerics.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>y = Wᵀ x for W [rows, cols] row-major: x [rows], y [cols]. Used to fold a projection into a query
/// (absorbed MLA: q_nope · W_UK).</summary>
public static class MatVecTransposed
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int rows, int cols)
    {
        if (x.Length != rows) ThrowHelper.LengthMismatch(nameof(x), rows, x.Length);
        if (w.Length < (long)rows * cols) ThrowHelper.TooShort(nameof(w), (long)rows * cols, w.Length);
        if (y.Length != cols) ThrowHelper.LengthMismatch(nameof(y), cols, y.Length);
        y.Clear();
        for (int r = 0; r < rows; r++)
            Axpy.Compute(w.Slice(r * cols, cols), x[r], y);
    }
}
