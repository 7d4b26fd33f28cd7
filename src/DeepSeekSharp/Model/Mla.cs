using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>Multi-head Latent Attention for a batch of n consecutive tokens at positions pos0.. of one sequence.
/// Writes <c>[kv_norm(c_kv) | rope(k_pe)]</c> of every new token to the cache, then attends causally.</summary>
internal static class Mla
{
    public static void Forward(ModelConfig c, AttentionWeights w, ReadOnlySpan<float> xb, int n, ReadOnlySpan<SequenceSlice> slices,
        int cacheLayer, RunState s, AttentionMode mode, Span<float> output)
    {
        int d = c.Dim, heads = c.NHeads, nope = c.QkNopeHeadDim, rope = c.QkRopeHeadDim, qk = c.QkHeadDim;
        int width = c.LatentCacheWidth, half = rope / 2;
        float scale = (float)c.SoftmaxScale;

        // q: [n, heads, nope | rope]
        Span<float> q = s.Q.AsSpan(0, n * heads * qk);
        if (w.WqA is { } wqA)
        {
            Span<float> qa = s.Qa.AsSpan(0, n * c.QLoraRank);
            wqA.Forward(xb, qa, n);
            RmsNorm.Forward(qa, w.QNorm, qa, (float)c.RmsNormEps);
            w.WqB!.Forward(qa, q, n);
        }
        else w.Wq!.Forward(xb, q, n);

        // kv_cmpr: [n, kv_lora | rope] → each row's cache position
        Span<float> kv = s.Kv.AsSpan(0, n * width);
        w.WkvA.Forward(xb, kv, n);
        Span<float> attn = s.AttnOut.AsSpan(0, n * heads * c.VHeadDim);
        int rowSize = heads * qk, outSize = heads * c.VHeadDim;
        foreach (SequenceSlice slice in slices)
        {
            Span<float> cache = slice.Cache.Layer(cacheLayer);
            int pos0 = slice.Cache.Length;
            for (int t = slice.Start; t < slice.Start + slice.Count; t++)
            {
                ReadOnlySpan<float> cos = s.Cos.AsSpan(t * half, half), sin = s.Sin.AsSpan(t * half, half);
                for (int h = 0; h < heads; h++)
                    Rope.ApplyInterleaved(q.Slice(t * rowSize + h * qk + nope, rope), cos, sin);
                Span<float> row = cache.Slice(s.Positions[t] * width, width);
                RmsNorm.Forward(kv.Slice(t * width, c.KvLoraRank), w.KvNorm, row[..c.KvLoraRank], (float)c.RmsNormEps);
                kv.Slice(t * width + c.KvLoraRank, rope).CopyTo(row[c.KvLoraRank..]);
                Rope.ApplyInterleaved(row[c.KvLoraRank..], cos, sin);
            }
            ReadOnlySpan<float> qs = q.Slice(slice.Start * rowSize, slice.Count * rowSize);
            Span<float> attnSlice = attn.Slice(slice.Start * outSize, slice.Count * outSize);
            bool absorbed = mode == AttentionMode.Absorbed || mode == AttentionMode.Auto && slice.Count == 1;
            if (absorbed) AttendAbsorbed(c, w, qs, slice.Count, pos0, cache, s, scale, attnSlice);
            else AttendExpanded(c, w, qs, slice.Count, pos0, cache, s, scale, attnSlice);
        }
        w.Wo.Forward(attn, output, n);
    }

    /// <summary>q_nope · W_UK per head gives a kv_lora_rank-wide query; attend over the latents; W_UV maps back.</summary>
    private static void AttendAbsorbed(ModelConfig c, AttentionWeights w, ReadOnlySpan<float> q, int n, int pos0,
        ReadOnlySpan<float> cache, RunState s, float scale, Span<float> attn)
    {
        int heads = c.NHeads, nope = c.QkNopeHeadDim, qk = c.QkHeadDim, v = c.VHeadDim, rank = c.KvLoraRank;
        int headRows = nope + v;
        for (int t = 0; t < n; t++)
        {
            int count = pos0 + t + 1; // causal: positions 0..pos0+t
            for (int h = 0; h < heads; h++)
            {
                ReadOnlySpan<float> qh = q.Slice((t * heads + h) * qk, qk);
                s.QLatent.AsSpan().Clear();
                w.WkvB.AccumulateRows(h * headRows, qh[..nope], s.QLatent);
                LatentAttention.Absorbed(s.QLatent, qh[nope..], cache, count, scale, s.Scores, s.LatentOut);
                w.WkvB.Forward(s.LatentOut, attn.Slice((t * heads + h) * v, v), 1, h * headRows + nope, v);
            }
        }
    }

    /// <summary>Decompress k_nope | v of every position with kv_b_proj, then ordinary multi-head attention.</summary>
    private static void AttendExpanded(ModelConfig c, AttentionWeights w, ReadOnlySpan<float> q, int n, int pos0,
        ReadOnlySpan<float> cache, RunState s, float scale, Span<float> attn)
    {
        int heads = c.NHeads, nope = c.QkNopeHeadDim, qk = c.QkHeadDim, v = c.VHeadDim, rank = c.KvLoraRank;
        int width = c.LatentCacheWidth, span = pos0 + n, kvStride = heads * (nope + v);
        s.EnsureExpanded(span);
        Span<float> latents = s.Latents.AsSpan(0, span * rank);
        for (int p = 0; p < span; p++) cache.Slice(p * width, rank).CopyTo(latents.Slice(p * rank, rank));
        Span<float> kvFull = s.KvExpanded.AsSpan(0, span * kvStride);
        w.WkvB.Forward(latents, kvFull, span);
        for (int t = 0; t < n; t++)
        {
            int count = pos0 + t + 1;
            for (int h = 0; h < heads; h++)
            {
                ReadOnlySpan<float> qh = q.Slice((t * heads + h) * qk, qk);
                LatentAttention.Expanded(qh[..nope], qh[nope..], kvFull, kvStride, h * (nope + v), cache, width, count, scale,
                    s.Scores, attn.Slice((t * heads + h) * v, v));
            }
        }
    }
}
