using System.Numerics.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>Attention of one query head over a latent cache whose rows are <c>[c_kv (C) | k_pe (R)]</c>.</summary>
public static class LatentAttention
{
    /// <summary>Absorbed MLA: scores over the cached latents directly, output in latent space.</summary>
    /// <param name="qLatent">[C] q_nope already multiplied into latent space (q_nope · W_UK)</param>
    /// <param name="qPe">[R] rotated rotary query</param>
    /// <param name="cache">[count, C + R] cached rows</param>
    /// <param name="scores">[count] scratch; holds the attention probabilities on return</param>
    /// <param name="outLatent">[C] Σ p_s c_kv[s]</param>
    public static void Absorbed(ReadOnlySpan<float> qLatent, ReadOnlySpan<float> qPe, ReadOnlySpan<float> cache, int count,
        float scale, Span<float> scores, Span<float> outLatent)
    {
        int c = qLatent.Length, r = qPe.Length, stride = c + r;
        if (cache.Length < (long)count * stride) ThrowHelper.TooShort(nameof(cache), (long)count * stride, cache.Length);
        if (scores.Length < count) ThrowHelper.TooShort(nameof(scores), count, scores.Length);
        if (outLatent.Length != c) ThrowHelper.LengthMismatch(nameof(outLatent), c, outLatent.Length);
        for (int s = 0; s < count; s++)
        {
            ReadOnlySpan<float> row = cache.Slice(s * stride, stride);
            scores[s] = (Dot.Compute(qLatent, row[..c]) + Dot.Compute(qPe, row[c..])) * scale;
        }
        Span<float> p = scores[..count];
        Softmax.InPlace(p);
        outLatent.Clear();
        for (int s = 0; s < count; s++)
            Axpy.Compute(cache.Slice(s * stride, c), p[s], outLatent);
    }

    /// <summary>Expanded MLA for one head: keys are [k_nope (from decompressed kv) | k_pe (from cache)].</summary>
    /// <param name="qNope">[N] non-rotary query</param>
    /// <param name="qPe">[R] rotated rotary query</param>
    /// <param name="kv">decompressed rows; row s of this head starts at s·kvStride + kvOffset: [k_nope (N) | v (V)]</param>
    /// <param name="cache">[count, C + R] cached rows (only k_pe, the last R of each row, is read)</param>
    /// <param name="output">[V] Σ p_s v[s]</param>
    public static void Expanded(ReadOnlySpan<float> qNope, ReadOnlySpan<float> qPe, ReadOnlySpan<float> kv, int kvStride, int kvOffset,
        ReadOnlySpan<float> cache, int cacheStride, int count, float scale, Span<float> scores, Span<float> output)
    {
        int n = qNope.Length, r = qPe.Length, v = output.Length;
        if (scores.Length < count) ThrowHelper.TooShort(nameof(scores), count, scores.Length);
        if (count > 0 && kv.Length < (long)(count - 1) * kvStride + kvOffset + n + v) ThrowHelper.TooShort(nameof(kv), (long)(count - 1) * kvStride + kvOffset + n + v, kv.Length);
        if (cache.Length < (long)count * cacheStride) ThrowHelper.TooShort(nameof(cache), (long)count * cacheStride, cache.Length);
        for (int s = 0; s < count; s++)
        {
            ReadOnlySpan<float> kNope = kv.Slice(s * kvStride + kvOffset, n);
            ReadOnlySpan<float> kPe = cache.Slice(s * cacheStride + cacheStride - r, r);
            scores[s] = (Dot.Compute(qNope, kNope) + Dot.Compute(qPe, kPe)) * scale;
        }
        Span<float> p = scores[..count];
        Softmax.InPlace(p);
        output.Clear();
        for (int s = 0; s < count; s++)
            Axpy.Compute(kv.Slice(s * kvStride + kvOffset + n, v), p[s], output);
    }
}
