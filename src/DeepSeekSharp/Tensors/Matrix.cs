namespace DeepSeekSharp.Tensors;

/// <summary>A dense row-major float32 matrix [Rows, Cols]; a linear layer's weight is [out, in] (y = W x).</summary>
public sealed class Matrix
{
    public Matrix(int rows, int cols)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        Rows = rows;
        Cols = cols;
        Data = new float[checked(rows * cols)];
    }

    public int Rows { get; }
    public int Cols { get; }

    /// <summary>Row-major values [Rows * Cols].</summary>
    public float[] Data { get; }

    public Span<float> Row(int r) => Data.AsSpan(r * Cols, Cols);

    /// <summary>Rows [start, start + count) as one span.</summary>
    public Span<float> RowRange(int start, int count) => Data.AsSpan(start * Cols, count * Cols);
}
