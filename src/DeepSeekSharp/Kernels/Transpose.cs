namespace DeepSeekSharp.Kernels;

/// <summary>y[c, r] = x[r, c]: a row-major matrix transposed (per-head weight rearrangements at load, a trainer's Wᵀ).</summary>
public static class Transpose
{
    /// <param name="x">[rows, cols]</param>
    /// <param name="y">[cols, rows]</param>
    public static void Compute(ReadOnlySpan<float> x, int rows, int cols, Span<float> y)
    {
        if (x.Length != rows * cols) ThrowHelper.LengthMismatch(nameof(x), (long)rows * cols, x.Length);
        if (y.Length != rows * cols) ThrowHelper.LengthMismatch(nameof(y), (long)rows * cols, y.Length);
        // 32 × 32 tiles: a whole tile's reads and writes stay in cache (a plain loop misses on every strided write).
        const int Tile = 32;
        for (int r0 = 0; r0 < rows; r0 += Tile)
            for (int c0 = 0; c0 < cols; c0 += Tile)
            {
                int r1 = Math.Min(rows, r0 + Tile), c1 = Math.Min(cols, c0 + Tile);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++) y[c * rows + r] = x[r * cols + c];
            }
    }
}
