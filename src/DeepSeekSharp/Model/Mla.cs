using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>Multi-head Latent Attention of one block (DeepSeek's <c>model.py</c> MLA) for a batch of n tokens that
/// continue one or more sequences. Each new token's <c>[kv_norm(c_kv) | rope(k_pe)]</c> goes into its sequence's
/// latent cache; then every token attends causally over its sequence, one of two equivalent ways:
/// <list type="bullet">
/// <item><b>expanded</b> (prefill): k_nope | v = W_kvB · c_kv for every cached position, then ordinary multi-head attention;</item>
/// <item><b>absorbed</b> (decode): q_latent = W_UKᵀ q_nope, scores q_latent·c_kv + q_pe·k_pe over the latents directly,
/// out = W_UV (Σ p c_kv) — nothing decompressed, the cache read once (llama.cpp: "converts into MQA").</item>
/// </list>
/// Shapes: H heads, D = qk_nope_head_dim, R = qk_rope_head_dim, V = v_head_dim, C = kv_lora_rank.</summary>
internal sealed class Mla(ModelConfig c, AttentionWeights w)
{
    private readonly float _eps = (float)c.RmsNormEps;

    public ModelConfig Config => c;
    public AttentionWeights Weights => w;
    /// <summary>softmax_scale, YaRN's mscale² included.</summary>
    public float Scale { get; } = (float)c.SoftmaxScale;

    /// <param name="xb">[n, dim] attn_norm(x)</param>
    /// <param name="cacheLayer">which layer of each slice's cache this block reads and writes</param>
    /// <param name="output">[n, dim] W_o · attention</param>
    public void Forward(ReadOnlySpan<float> xb, int n, ReadOnlySpan<SequenceSlice> slices, int cacheLayer, RunState s, AttentionMode mode,
        IActivationObserver? observer, int layer, Span<float> output)
    {
        int heads = c.NHeads, qk = c.QkHeadDim, width = c.LatentCacheWidth;
        Span<float> q = s.Q.AsSpan(0, n * heads * qk);          // [n, H, D | R]
        Query(xb, n, s, q);
        Span<float> kvCmpr = s.Kv.AsSpan(0, n * width);         // [n, C | R]
        w.WkvA.Forward(xb, kvCmpr, n);
        observer?.OnTensor(TensorName.Q, layer, q, n, heads * qk);
        observer?.OnTensor(TensorName.KvCmpr, layer, kvCmpr, n, width);

        Span<float> attn = s.AttnOut.AsSpan(0, n * heads * c.VHeadDim); // [n, H, V]
        foreach (SequenceSlice slice in slices)
        {
            LatentKvCache kv = slice.Cache;
            int pos0 = kv.Length, rows = slice.Count;
            RotateAndCache(q, kvCmpr, slice, kv, cacheLayer, s);
            ReadOnlySpan<float> qs = q.Slice(slice.Start * heads * qk, rows * heads * qk);
            Span<float> outs = attn.Slice(slice.Start * heads * c.VHeadDim, rows * heads * c.VHeadDim);
            bool absorbed = mode == AttentionMode.Absorbed || mode == AttentionMode.Auto && (rows == 1 || slice.Decoding);
            if (kv.Format == LatentCacheFormat.BF16 && absorbed && s.EnsureHeads() is { } blocks)
            {
                AbsorbedDecode.Run(this, blocks, qs, rows, pos0, kv.Bf16Layer(cacheLayer), outs); // read in place
                continue;
            }
            // [capacity, C | R]: a bfloat16 cache's rows in use widened into scratch for the other paths
            ReadOnlySpan<float> cache = kv.Format == LatentCacheFormat.F32 ? kv.Layer(cacheLayer) : s.Widened(kv, cacheLayer, pos0 + rows);
            if (absorbed) AttendAbsorbed(qs, rows, pos0, cache, s, outs);
            else AttendExpanded(qs, rows, pos0, cache, s, outs);
        }
        observer?.OnTensor(TensorName.KqvOut, layer, attn, n, heads * c.VHeadDim);
        w.Wo.Forward(attn, output, n);
    }

    /// <summary>q = W_q x (plain), or W_qB · q_norm(W_qA x) (low-rank, V3).</summary>
    private void Query(ReadOnlySpan<float> xb, int n, RunState s, Span<float> q)
    {
        switch (w.Q)
        {
            case QProjection.Plain plain:
                plain.Wq.Forward(xb, q, n);
                break;
            case QProjection.LowRank lowRank:
                Span<float> qa = s.Qa.AsSpan(0, n * c.QLoraRank); // [n, q_lora_rank]
                lowRank.WqA.Forward(xb, qa, n);
                RmsNorm.Forward(qa, lowRank.QNorm, qa, _eps);
                lowRank.WqB.Forward(qa, q, n);
                break;
        }
    }

    /// <summary>Decoupled RoPE on each token's q_pe (every head) and k_pe (shared), and the token's cache row
    /// <c>[kv_norm(c_kv) | rope(k_pe)]</c> at its position (made in place in a float32 cache, in scratch for another).</summary>
    private void RotateAndCache(Span<float> q, ReadOnlySpan<float> kvCmpr, SequenceSlice slice, LatentKvCache kv, int cacheLayer, RunState s)
    {
        bool inPlace = kv.Format == LatentCacheFormat.F32;
        int heads = c.NHeads, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, qk = c.QkHeadDim;
        int rank = c.KvLoraRank, width = c.LatentCacheWidth, half = rope / 2;
        for (int t = slice.Start; t < slice.Start + slice.Count; t++)
        {
            ReadOnlySpan<float> cos = s.Cos.AsSpan(t * half, half), sin = s.Sin.AsSpan(t * half, half);
            for (int h = 0; h < heads; h++) Rope.ApplyInterleaved(q.Slice((t * heads + h) * qk + nope, rope), cos, sin);
            Span<float> row = inPlace ? kv.Layer(cacheLayer).Slice(s.Positions[t] * width, width) : s.CacheRow(width);
            RmsNorm.Forward(kvCmpr.Slice(t * width, rank), w.KvNorm, row[..rank], _eps);
            kvCmpr.Slice(t * width + rank, rope).CopyTo(row[rank..]);
            Rope.ApplyInterleaved(row[rank..], cos, sin);
            if (!inPlace) kv.WriteRows(cacheLayer, s.Positions[t], row);
        }
    }

    /// <summary>Absorbed attention of each of n tokens over positions 0..pos0+t: all heads over blocks of the cache
    /// where the CPU has the blocked kernel (<see cref="AbsorbedDecode"/>), else one head at a time.</summary>
    private void AttendAbsorbed(ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<float> cache, RunState s, Span<float> attn)
    {
        if (s.EnsureHeads() is { } blocks) AbsorbedDecode.Run(this, blocks, q, n, pos0, cache, attn);
        else HeadsJob.Run(this, s, q, n, pos0, cache, attn, absorbed: true);
    }

    /// <summary>k_nope | v of every position = W_kvB · c_kv ([span, H, D + V]), then ordinary multi-head attention.</summary>
    private void AttendExpanded(ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<float> cache, RunState s, Span<float> attn)
    {
        int rank = c.KvLoraRank, width = c.LatentCacheWidth, span = pos0 + n;
        s.EnsureHeads();
        s.EnsureExpanded(span);
        Span<float> latents = s.Latents.AsSpan(0, span * rank); // [span, C]
        for (int p = 0; p < span; p++) cache.Slice(p * width, rank).CopyTo(latents.Slice(p * rank, rank));
        w.WkvB.Forward(latents, s.KvExpanded[..(span * c.NHeads * (c.QkNopeHeadDim + c.VHeadDim))], span);
        HeadsJob.Run(this, s, q, n, pos0, cache, attn, absorbed: false);
    }
}
