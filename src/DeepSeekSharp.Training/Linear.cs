using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Training;

/// <summary>A linear layer y = W x over the flat parameter buffers: the forward product and both halves of its
/// derivative (see <see cref="Gemm"/>).</summary>
internal static class Linear
{
    /// <summary>y[n, rows] = x[n, cols] · Wᵀ.</summary>
    public static void Forward(ParameterSet ps, Parameter w, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        if (n < Gemm.DotBelow) Gemm.ForwardByDots(x[..(n * w.Cols)], ps.Value(w), y[..(n * w.Rows)], n, w.Rows, w.Cols);
        else Gemm.ForwardTransposed(x[..(n * w.Cols)], ps.Transposed(w), y[..(n * w.Rows)], n, w.Rows, w.Cols);
    }

    /// <summary>dW += dyᵀ x; dx += dy W unless <paramref name="dx"/> is empty (the input needs no gradient).</summary>
    public static void Backward(ParameterSet ps, Parameter w, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, Span<float> dx, int n)
    {
        Gemm.BackwardWeight(ps.Grad(w), dy[..(n * w.Rows)], x[..(n * w.Cols)], n, w.Rows, w.Cols);
        if (!dx.IsEmpty) Gemm.BackwardData(dx[..(n * w.Cols)], dy[..(n * w.Rows)], ps.Value(w), n, w.Rows, w.Cols);
    }
}
