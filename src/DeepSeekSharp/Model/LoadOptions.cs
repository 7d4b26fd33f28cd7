using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Model;

/// <summary>How weights are held in memory. Defaults: every weight keeps its stored format (F32, BF16, F16, or FP8
/// with its block scales), read into aligned anonymous memory.</summary>
public sealed record LoadOptions
{
    /// <summary>Convert projection, expert, embedding and lm_head weights to this format at load (one of
    /// <see cref="WeightFormats.LoadTargets"/>). Matrices whose width does not fit the format's block fall back as
    /// llama-quantize's do (<see cref="WeightFormats.LlamaFallback"/>: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0), then to
    /// Q8_0, then F32; routers stay F32.</summary>
    public WeightFormat? Quantize { get; init; }

    /// <summary>Use weights that keep their stored format (F32, BF16, F16, FP8 codes; GGUF blocks in their file layout)
    /// straight from the memory-mapped files instead of reading them into anonymous memory (the files stay open while
    /// the model lives). On this host idle file pages get evicted and re-read,
    /// so anonymous memory is the default.</summary>
    public bool MemoryMap { get; init; }

    /// <summary>How every session's latent cache holds its rows: float32 (default) or bfloat16, half the memory per
    /// cached position and half the bytes a deep decode step reads, each value rounded to nearest even as it is
    /// written (<see cref="LatentCacheFormat"/>).</summary>
    public LatentCacheFormat CacheFormat { get; init; }

    /// <summary>Reports (done, total) tensors while loading.</summary>
    public IProgress<(int Done, int Total)>? Progress { get; init; }

    /// <summary>The format a [*, cols] weight stored as <paramref name="stored"/> gets.</summary>
    public WeightFormat FormatFor(WeightFormat stored, int cols, bool quantizable)
    {
        if (quantizable && Quantize is { } q)
        {
            if (q.Traits().CanHold(cols)) return q;
            if (q.LlamaFallback() is { } f && f.Traits().CanHold(cols)) return f;
            if (WeightFormat.Q8_0.Traits().CanHold(cols) && q != WeightFormat.F32) return WeightFormat.Q8_0;
            return WeightFormat.F32;
        }
        return stored;
    }
}
