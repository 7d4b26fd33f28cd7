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

    /// <summary>q_nope · W_UK per head (via the transposed W_UK) gives a kv_lora_rank-wide query; attend over the
    /// latents; W_UV maps back. Heads run in parallel.</summary>
    private static void AttendAbsorbed(ModelConfig c, AttentionWeights w, ReadOnlySpan<float> q, int n, int pos0,
        ReadOnlySpan<float> cache, RunState s, float scale, Span<float> attn)
    {
        if (LatentAttention.HasBlockedAbsorbed(c.KvLoraRank, c.QkRopeHeadDim)) AbsorbedJob.Run(c, w, q, n, pos0, cache, s, scale, attn);
        else AttentionJob.Run(c, w, q, n, pos0, cache, s, scale, attn, absorbed: true);
    }

    /// <summary>Absorbed attention of each token in three parallel steps: the queries folded into latent space (heads
    /// four a chunk), attention of all heads over fixed blocks of positions (a block a chunk: each block of the cache is
    /// read once for all heads, and the threads share the positions instead of re-reading the whole cache per group
    /// of heads), then per head the blocks merged and mapped back by W_UV. Block boundaries are fixed, so the result
    /// does not depend on the thread count.</summary>
    private sealed unsafe class AbsorbedJob : PoolJob
    {
        [ThreadStatic] private static AbsorbedJob? _mine;

        private ModelConfig _c = null!;
        private AttentionWeights _w = null!;
        private RunState _s = null!;
        private float* _q, _cache, _attn;
        private int _t, _count, _step, _blocks;
        private float _scale;

        public static void Run(ModelConfig c, AttentionWeights w, ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<float> cache,
            RunState s, float scale, Span<float> attn)
        {
            AbsorbedJob job = _mine ??= new AbsorbedJob();
            s.EnsureHeads();
            fixed (float* pq = q, pc = cache, pa = attn)
            {
                (job._c, job._w, job._s, job._scale) = (c, w, s, scale);
                job._q = pq;
                job._cache = pc;
                job._attn = pa;
                int groups = LatentAttention.PaddedHeads(c.NHeads) / 4;
                for (int t = 0; t < n; t++)
                {
                    job._t = t;
                    job._count = pos0 + t + 1; // causal: positions 0..pos0+t
                    job._blocks = (job._count + LatentAttention.BlockPositions - 1) / LatentAttention.BlockPositions;
                    for (job._step = 0; job._step < 3; job._step++)
                        WorkerPool.Shared.Run(job, job._step == 1 ? job._blocks : groups);
                }
                (job._w, job._s) = (null!, null!);
            }
        }

        public override void Execute(int chunk)
        {
            ModelConfig c = _c;
            int heads = c.NHeads, nope = c.QkNopeHeadDim, qk = c.QkHeadDim, v = c.VHeadDim, rank = c.KvLoraRank, width = c.LatentCacheWidth;
            int padded = LatentAttention.PaddedHeads(heads);
            if (_step == 1)
            {
                int s0 = chunk * LatentAttention.BlockPositions, count = Math.Min(LatentAttention.BlockPositions, _count - s0);
                LatentAttention.AbsorbedBlock(padded / 4, _s.QPacked, new ReadOnlySpan<float>(_cache + (long)s0 * width, count * width), count,
                    rank, width - rank, _scale, _s.BlockOut.AsSpan(chunk * padded * rank, padded * rank),
                    _s.BlockMax.AsSpan(chunk * padded, padded), _s.BlockSum.AsSpan(chunk * padded, padded));
                return;
            }
            for (int h = 4 * chunk; h < Math.Min(heads, 4 * chunk + 4); h++)
            {
                var qh = new ReadOnlySpan<float>(_q + (_t * heads + h) * qk, qk);
                Span<float> packed = _s.QPacked.AsSpan(h * width, width);
                if (_step == 0)
                {
                    _w.WkT.Forward(qh[..nope], packed[..rank], 1, h * rank, rank);
                    qh[nope..].CopyTo(packed[rank..]);
                    continue;
                }
                Span<float> latent = _s.LatentOut.AsSpan(h * rank, rank);
                LatentAttention.AbsorbedMerge(_blocks, padded, h, _s.BlockOut, _s.BlockMax, _s.BlockSum, latent);
                _w.WkvB.Forward(latent, new Span<float>(_attn + (_t * heads + h) * v, v), 1, h * (nope + v) + nope, v);
            }
        }
    }

    /// <summary>Decompress k_nope | v of every position with kv_b_proj, then ordinary multi-head attention, heads in
    /// parallel.</summary>
    private static void AttendExpanded(ModelConfig c, AttentionWeights w, ReadOnlySpan<float> q, int n, int pos0,
        ReadOnlySpan<float> cache, RunState s, float scale, Span<float> attn)
    {
        int rank = c.KvLoraRank, width = c.LatentCacheWidth, span = pos0 + n;
        s.EnsureExpanded(span);
        Span<float> latents = s.Latents.AsSpan(0, span * rank);
        for (int p = 0; p < span; p++) cache.Slice(p * width, rank).CopyTo(latents.Slice(p * rank, rank));
        w.WkvB.Forward(latents, s.KvExpanded[..(span * c.NHeads * (c.QkNopeHeadDim + c.VHeadDim))], span);
        AttentionJob.Run(c, w, q, n, pos0, cache, s, scale, attn, absorbed: false);
    }

    /// <summary>Attention of every token of a slice for one head per chunk; heads are independent, so any thread
    /// may run any head with the same result.</summary>
    private sealed unsafe class AttentionJob : PoolJob
    {
        [ThreadStatic] private static AttentionJob? _mine;

        private ModelConfig _c = null!;
        private AttentionWeights _w = null!;
        private RunState _s = null!;
        private float* _q, _cache, _attn;
        private int _n, _pos0;
        private float _scale;
        private bool _absorbed;

        public static void Run(ModelConfig c, AttentionWeights w, ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<float> cache,
            RunState s, float scale, Span<float> attn, bool absorbed)
        {
            AttentionJob job = _mine ??= new AttentionJob();
            s.EnsureHeads();
            fixed (float* pq = q, pc = cache, pa = attn)
            {
                (job._c, job._w, job._s, job._n, job._pos0, job._scale, job._absorbed) = (c, w, s, n, pos0, scale, absorbed);
                job._q = pq;
                job._cache = pc;
                job._attn = pa;
                WorkerPool.Shared.Run(job, c.NHeads);
                (job._w, job._s) = (null!, null!);
            }
        }

        public override void Execute(int h)
        {
            ModelConfig c = _c;
            int heads = c.NHeads, nope = c.QkNopeHeadDim, qk = c.QkHeadDim, v = c.VHeadDim, rank = c.KvLoraRank;
            int width = c.LatentCacheWidth, kvStride = heads * (nope + v), capacity = _s.Scores.Length / heads;
            Span<float> scores = _s.Scores.AsSpan(h * capacity, capacity);
            var cache = new ReadOnlySpan<float>(_cache, (_pos0 + _n) * width);
            if (!_absorbed && _n > 1 && LatentAttention.HasBlockedPath)
            {
                LatentAttention.ExpandedQueries(new ReadOnlySpan<float>(_q + h * qk, (_n - 1) * heads * qk + qk), heads * qk, _n, _pos0,
                    nope, qk - nope, v, _s.KvExpanded[..((_pos0 + _n) * kvStride)], kvStride, h * (nope + v), cache, width, _scale,
                    new Span<float>(_attn + h * v, (_n - 1) * heads * v + v), heads * v);
                return;
            }
            for (int t = 0; t < _n; t++)
            {
                int count = _pos0 + t + 1; // causal: positions 0..pos0+t
                var qh = new ReadOnlySpan<float>(_q + (t * heads + h) * qk, qk);
                var output = new Span<float>(_attn + (t * heads + h) * v, v);
                if (_absorbed)
                {
                    Span<float> qLatent = _s.QLatent.AsSpan(h * rank, rank), latentOut = _s.LatentOut.AsSpan(h * rank, rank);
                    _w.WkT.Forward(qh[..nope], qLatent, 1, h * rank, rank);
                    LatentAttention.Absorbed(qLatent, qh[nope..], cache, count, _scale, scores, latentOut);
                    _w.WkvB.Forward(latentOut, output, 1, h * (nope + v) + nope, v);
                }
                else
                {
                    LatentAttention.Expanded(qh[..nope], qh[nope..], _s.KvExpanded[..((_pos0 + _n) * kvStride)], kvStride, h * (nope + v),
                        cache, width, count, _scale, scores, output);
                }
            }
        }
    }
}
