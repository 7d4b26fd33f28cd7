namespace DeepSeekSharp.Model;

/// <summary>The MLA cache of one sequence: per layer and position only <c>[c_kv (kv_lora_rank) | k_pe
/// (qk_rope_head_dim)]</c> — the normalised latent and the rotated rotary key shared by all heads.</summary>
public sealed class LatentKvCache
{
    private readonly float[][] _layers; // [layers][capacity, Width]

    public LatentKvCache(int layers, int width, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        Width = width;
        Capacity = capacity;
        _layers = new float[layers][];
        for (int l = 0; l < layers; l++) _layers[l] = new float[checked(capacity * width)];
    }

    /// <summary>Values per position per layer (kv_lora_rank + qk_rope_head_dim).</summary>
    public int Width { get; }
    public int Capacity { get; }
    public int Layers => _layers.Length;
    /// <summary>Positions filled.</summary>
    public int Length { get; private set; }
    public long BytesPerToken => (long)Layers * Width * sizeof(float);

    /// <summary>All rows of a layer [Capacity, Width]; rows ≥ <see cref="Length"/> are being written by the step in flight.</summary>
    public Span<float> Layer(int layer) => _layers[layer];

    /// <summary>Marks <paramref name="count"/> more positions as filled (after every layer has written them).</summary>
    internal void Commit(int count)
    {
        if (Length + count > Capacity) throw new InvalidOperationException($"cache holds {Capacity} positions; cannot commit {count} more after {Length}");
        Length += count;
    }

    public void Clear() => Length = 0;

    /// <summary>Forgets positions from <paramref name="length"/> on (e.g. rejected speculative tokens).</summary>
    public void Truncate(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Length);
        Length = length;
    }
}
