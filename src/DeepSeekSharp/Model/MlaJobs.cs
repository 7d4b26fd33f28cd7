using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>Absorbed attention of decoded tokens through <see cref="AbsorbedBlocks"/>, in three parallel steps per
/// token: fold the queries into the latent space (heads four a chunk), attend over the cache blocks (a block a
/// chunk: each block of the cache is read once for all heads, and the threads share the positions), then merge
/// each head's blocks and project it back with W_UV (heads four a chunk). Block boundaries are fixed, so the result
/// does not depend on the thread count.</summary>
internal sealed unsafe class AbsorbedDecode
{
    [ThreadStatic] private static AbsorbedDecode? _mine;

    private readonly FoldQueries _fold;
    private readonly AttendBlocks _attend;
    private readonly MergeAndProject _merge;
    private ModelConfig _c = null!;
    private AttentionWeights _w = null!;
    private AbsorbedBlocks _blocks = null!;
    private float* _q, _cache, _attn; // q [n, H, D | R]; cache [positions, C | R]; attn [n, H, V]
    private int _t, _count;
    private float _scale;

    private AbsorbedDecode() => (_fold, _attend, _merge) = (new(this), new(this), new(this));

    /// <param name="q">[n, H, D | R] rotated queries</param>
    /// <param name="cache">[pos0 + n, C | R] the layer's latent cache</param>
    /// <param name="attn">[n, H, V]</param>
    public static void Run(Mla layer, AbsorbedBlocks blocks, ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<float> cache, Span<float> attn)
    {
        AbsorbedDecode d = _mine ??= new AbsorbedDecode();
        fixed (float* pq = q, pc = cache, pa = attn)
        {
            (d._c, d._w, d._blocks, d._scale) = (layer.Config, layer.Weights, blocks, layer.Scale);
            d._q = pq;
            d._cache = pc;
            d._attn = pa;
            for (int t = 0; t < n; t++)
            {
                d._t = t;
                d._count = pos0 + t + 1; // causal: positions 0..pos0+t
                WorkerPool.Shared.Run(d._fold, blocks.HeadGroups);
                WorkerPool.Shared.Run(d._attend, AbsorbedBlocks.Blocks(d._count));
                WorkerPool.Shared.Run(d._merge, blocks.HeadGroups);
            }
            (d._w, d._blocks) = (null!, null!);
        }
    }

    private ReadOnlySpan<float> Query(int h) => new(_q + (_t * _c.NHeads + h) * _c.QkHeadDim, _c.QkHeadDim); // [D | R]

    /// <summary>Head h's packed query [q_latent | q_pe], q_latent = W_UK[h]ᵀ q_nope (rows h·C.. of the transposed W_UK).</summary>
    private sealed class FoldQueries(AbsorbedDecode d) : PoolJob
    {
        public override void Execute(int group)
        {
            int nope = d._c.QkNopeHeadDim, rank = d._c.KvLoraRank;
            for (int h = 4 * group; h < Math.Min(d._c.NHeads, 4 * group + 4); h++)
            {
                ReadOnlySpan<float> qh = d.Query(h);
                Span<float> packed = d._blocks.Query(h);
                d._w.WkT.Forward(qh[..nope], packed[..rank], 1, h * rank, rank);
                qh[nope..].CopyTo(packed[rank..]);
            }
        }
    }

    /// <summary>Every head over one block of cached positions.</summary>
    private sealed class AttendBlocks(AbsorbedDecode d) : PoolJob
    {
        public override void Execute(int block) =>
            d._blocks.Attend(block, new ReadOnlySpan<float>(d._cache, d._count * d._c.LatentCacheWidth), d._count, d._scale);
    }

    /// <summary>Head h's latent Σ p c_kv merged over the blocks, then out_h = W_UV[h] latent (kv_b_proj's v rows of h).</summary>
    private sealed class MergeAndProject(AbsorbedDecode d) : PoolJob
    {
        public override void Execute(int group)
        {
            ModelConfig c = d._c;
            int nope = c.QkNopeHeadDim, v = c.VHeadDim;
            for (int h = 4 * group; h < Math.Min(c.NHeads, 4 * group + 4); h++)
            {
                ReadOnlySpan<float> latent = d._blocks.Merge(AbsorbedBlocks.Blocks(d._count), h); // [C]
                d._w.WkvB.Forward(latent, new Span<float>(d._attn + (d._t * c.NHeads + h) * v, v), 1, h * (nope + v) + nope, v);
            }
        }
    }
}

/// <summary>Attention of every token of a slice for one head per chunk: expanded (over the decompressed k_nope | v),
/// or absorbed one head at a time where the blocked kernel does not run. Heads are independent, so any thread may
/// run any head with the same result.</summary>
internal sealed unsafe class HeadsJob : PoolJob
{
    [ThreadStatic] private static HeadsJob? _mine;

    private ModelConfig _c = null!;
    private AttentionWeights _w = null!;
    private RunState _s = null!;
    private float* _q, _cache, _attn;
    private int _n, _pos0;
    private float _scale;
    private bool _absorbed;

    public static void Run(Mla layer, RunState s, ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<float> cache, Span<float> attn, bool absorbed)
    {
        HeadsJob job = _mine ??= new HeadsJob();
        fixed (float* pq = q, pc = cache, pa = attn)
        {
            (job._c, job._w, job._s, job._n, job._pos0, job._scale, job._absorbed) = (layer.Config, layer.Weights, s, n, pos0, layer.Scale, absorbed);
            job._q = pq;
            job._cache = pc;
            job._attn = pa;
            WorkerPool.Shared.Run(job, layer.Config.NHeads);
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
