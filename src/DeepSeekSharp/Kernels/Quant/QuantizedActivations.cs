namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Activations quantised to 8 bits per block of 32 (as llama.cpp quantises activations for integer dot
/// products): for each block a float scale d = max|x| / 127, codes q = round(x / d) in [-127, 127], and
/// d · Σq (used by formats with block minimums). Buffers grow and are then reused.</summary>
public sealed class QuantizedActivations
{
    public const int Block = 32;

    public sbyte[] Q = [];      // [rows, cols]
    public float[] D = [];      // [rows, cols / 32]    (per-32 mode) or [rows, cols / 256] (per-256 mode)
    public int[] BlockSum = []; // [rows, cols / 32]: Σ q of each 32 (per-256 mode, for block minimums)
    public int Cols { get; private set; }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void Quantize(ReadOnlySpan<float> x, int rows, int cols)
    {
        if (cols % Block != 0) throw new ArgumentException($"cols ({cols}) must be a multiple of {Block}", nameof(cols));
        Quantize(x, rows, cols, Block);
    }

    /// <summary>One scale per 256 values (ggml's Q8_K), with Σq per 32 kept for formats with block minimums
    /// (Q4_K): sub-block scales can then be applied in integer arithmetic.</summary>
    public void QuantizeK(ReadOnlySpan<float> x, int rows, int cols)
    {
        if (cols % 256 != 0) throw new ArgumentException($"cols ({cols}) must be a multiple of 256", nameof(cols));
        Quantize(x, rows, cols, 256);
        int sub = rows * cols / Block;
        if (BlockSum.Length < sub) BlockSum = new int[sub];
        for (int b = 0; b < sub; b++)
        {
            int sum = 0;
            foreach (sbyte q in Q.AsSpan(b * Block, Block)) sum += q;
            BlockSum[b] = sum;
        }
    }

    private void Quantize(ReadOnlySpan<float> x, int rows, int cols, int block)
    {
        int blocks = rows * cols / block;
        if (Q.Length < rows * cols) Q = new sbyte[rows * cols];
        if (D.Length < blocks) D = new float[blocks];
        Cols = cols;
        for (int b = 0; b < blocks; b++)
        {
            ReadOnlySpan<float> v = x.Slice(b * block, block);
            float amax = 0;
            foreach (float f in v) amax = MathF.Max(amax, MathF.Abs(f));
            float d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
            Span<sbyte> q = Q.AsSpan(b * block, block);
            for (int i = 0; i < block; i++) q[i] = (sbyte)(int)MathF.Round(v[i] * inv, MidpointRounding.ToEven);
            D[b] = d;
        }
    }
}
