using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>How a latent cache holds its values.</summary>
public enum LatentCacheFormat
{
    /// <summary>float32: what the model computed (the default).</summary>
    F32,

    /// <summary>bfloat16, rounded to nearest even as each row is written: half the memory and half the bytes a deep
    /// decode step reads, at the cost of the rounding (llama.cpp's <c>-ctk bf16</c>).</summary>
    BF16,
}

/// <summary>The MLA cache of one sequence: per layer and position only <c>[c_kv (kv_lora_rank) | k_pe
/// (qk_rope_head_dim)]</c> — the normalised latent and the rotated rotary key shared by all heads — as float32 or
/// bfloat16 (<see cref="Format"/>). Rows go in and out as float32 (<see cref="WriteRows"/>, <see cref="ReadRows"/>);
/// attention reads a float32 cache in place (<see cref="Layer"/>) and a bfloat16 one too where it has the blocked
/// kernels (which widen each value as they load it), else the rows in use widened once.</summary>
public sealed class LatentKvCache
{
    // [layers][capacity, Width], or empty; pinned, each layer's rows from a 64-byte boundary (AlignedScratch), so the
    // attention kernels' 512-bit loads of a row never split across cache lines.
    private readonly float[]?[] _f32;
    private readonly ushort[]?[] _bf16;

    public LatentKvCache(int layers, int width, int capacity, LatentCacheFormat format = LatentCacheFormat.F32)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        if (!Enum.IsDefined(format)) throw new ArgumentOutOfRangeException(nameof(format), format, "F32 or BF16");
        Width = width;
        Capacity = capacity;
        Format = format;
        Layers = layers;
        _f32 = new float[]?[format == LatentCacheFormat.F32 ? layers : 0];
        _bf16 = new ushort[]?[format == LatentCacheFormat.BF16 ? layers : 0];
        for (int l = 0; l < _f32.Length; l++) AlignedScratch.Grow(ref _f32[l], checked(capacity * width));
        for (int l = 0; l < _bf16.Length; l++) AlignedScratch.Grow(ref _bf16[l], checked(capacity * width));
    }

    /// <summary>Values per position per layer (kv_lora_rank + qk_rope_head_dim).</summary>
    public int Width { get; }
    public int Capacity { get; }
    public int Layers { get; }
    public LatentCacheFormat Format { get; }
    /// <summary>Positions filled.</summary>
    public int Length { get; private set; }
    public long BytesPerToken => (long)Layers * Width * BytesPerValue(Format);

    /// <summary>Bytes one cached value takes in <paramref name="format"/>.</summary>
    public static int BytesPerValue(LatentCacheFormat format) => format == LatentCacheFormat.BF16 ? sizeof(ushort) : sizeof(float);

    /// <summary>All rows of a float32 cache's layer [Capacity, Width]; rows ≥ <see cref="Length"/> are being written by
    /// the step in flight.</summary>
    public Span<float> Layer(int layer) => Format == LatentCacheFormat.F32 ? AlignedScratch.Grow(ref _f32[layer], Capacity * Width)
        : throw new InvalidOperationException("a bfloat16 latent cache has no float32 rows: use ReadRows");

    /// <summary>All rows of a bfloat16 cache's layer [Capacity, Width], each in <see cref="Bf16Latents"/>' layout.</summary>
    internal Span<ushort> Bf16Layer(int layer) => Format == LatentCacheFormat.BF16 ? AlignedScratch.Grow(ref _bf16[layer], Capacity * Width)
        : throw new InvalidOperationException("a float32 latent cache has no bfloat16 rows");

    /// <summary>Rows <paramref name="start"/> .. of a layer as float32 (as many whole rows as <paramref name="rows"/> holds).</summary>
    public void ReadRows(int layer, int start, Span<float> rows)
    {
        if (Format == LatentCacheFormat.F32) Layer(layer).Slice(start * Width, rows.Length).CopyTo(rows);
        else Bf16Latents.Unpack(Bf16Layer(layer).Slice(start * Width, rows.Length), rows, Width);
    }

    /// <summary>Writes whole rows <paramref name="start"/> .. of a layer (a bfloat16 cache rounds them to nearest even).</summary>
    public void WriteRows(int layer, int start, ReadOnlySpan<float> rows)
    {
        if (Format == LatentCacheFormat.F32)
        {
            rows.CopyTo(Layer(layer).Slice(start * Width, rows.Length));
            return;
        }
        Bf16Latents.Pack(rows, Bf16Layer(layer).Slice(start * Width, rows.Length), Width);
    }

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
