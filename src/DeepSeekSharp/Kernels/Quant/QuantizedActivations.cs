namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Activations quantised to 8 bits per block of 32 (as llama.cpp quantises activations for integer dot
/// products): for each block a float scale d = max|x| / 127, codes q = round(x / d) in [-127, 127], and
/// d · Σq (used by formats with block minimums). Buffers grow and are then reused.</summary>
public sealed class QuantizedActivations
{
    public const int Block = 32;

    public sbyte[] Q = [];      // [rows, cols]
    public float[] D = [];      // [rows, cols / 32]
    public float[] Sum = [];    // [rows, cols / 32]: d · Σ q
    public int Cols { get; private set; }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void Quantize(ReadOnlySpan<float> x, int rows, int cols)
    {
        if (cols % Block != 0) throw new ArgumentException($"cols ({cols}) must be a multiple of {Block}", nameof(cols));
        int blocks = rows * cols / Block;
        if (Q.Length < rows * cols) Q = new sbyte[rows * cols];
        if (D.Length < blocks) { D = new float[blocks]; Sum = new float[blocks]; }
        Cols = cols;
        for (int b = 0; b < blocks; b++)
        {
            ReadOnlySpan<float> v = x.Slice(b * Block, Block);
            float amax = 0;
            foreach (float f in v) amax = MathF.Max(amax, MathF.Abs(f));
            float d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
            int sum = 0;
            Span<sbyte> q = Q.AsSpan(b * Block, Block);
            for (int i = 0; i < Block; i++)
            {
                int c = (int)MathF.Round(v[i] * inv, MidpointRounding.ToEven);
                q[i] = (sbyte)c;
                sum += c;
            }
            D[b] = d;
            Sum[b] = d * sum;
        }
    }
}
