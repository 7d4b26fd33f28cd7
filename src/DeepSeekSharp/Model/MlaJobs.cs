using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>Absorbed attention of decoded tokens through <see cref="AbsorbedBlocks"/>, up to
/// <see cref="AbsorbedBlocks.Tokens"/> tokens at a time: fold every token's queries into the latent space (heads four
/// a chunk, W_UK read once for all the tokens), then attend over the cache blocks (a slot of a token a chunk — one
/// block, or a fixed run of them folded in order in a deep context: each block of the cache is read once for all
/// heads, the threads share the slots of every token whose results they hold at once; where the slots are fewer
/// than four times the threads, each slot's heads go in parts) and merge each head's slots per token; the last merge step also projects every token's latents back with
/// W_UV (heads four a chunk, read once). A speculative pass of four tokens a few hundred positions deep takes the
/// three parallel steps one token takes; deeper, tokens attend in as many turns as the slots need. Each token's
/// products are the bits it gets alone (every weight format gives a token the same bits whatever number of tokens
/// shares a product), block and slot boundaries are fixed and heads independent, so the result depends neither on the tokens
/// decoded together nor on the thread count.</summary>
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
    private ushort* _bf16;            // the cache as bfloat16 instead (then _cache is null)
    private int _pos0, _t0, _tokens;      // tokens _t0 .. _t0 + _tokens − 1 folded, the first at position _pos0 + _t0
    private int _first, _end;             // of those, _first .. _end − 1 attending
    private int _parts;                   // each slot's heads attended in this many chunks
    private int _run, _threads;           // whole slots a chunk where parts is one (else one); the pool's threads
    private long _pass;                   // attend steps so far (a thread's read-ahead is only trusted within one)
    private readonly int[] _slot = new int[AbsorbedBlocks.Tokens + 1]; // attending token _first + i's first slot; then the slots in use
    private float _scale;
    private float[] _in = [], _out = []; // per head: the tokens' q_nope [Tokens, D] to fold; the products [Tokens, max(C, V)]

    private AbsorbedDecode() => (_fold, _attend, _merge) = (new(this), new(this), new(this));

    /// <param name="q">[n, H, D | R] rotated queries</param>
    /// <param name="cache">[pos0 + n, C | R] the layer's latent cache</param>
    /// <param name="attn">[n, H, V]</param>
    public static void Run(Mla layer, AbsorbedBlocks blocks, ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<float> cache, Span<float> attn)
    {
        fixed (float* pc = cache) Run(layer, blocks, q, n, pos0, pc, null, attn);
    }

    /// <param name="cache">[pos0 + n, C | R] the layer's latent cache as bfloat16</param>
    public static void Run(Mla layer, AbsorbedBlocks blocks, ReadOnlySpan<float> q, int n, int pos0, ReadOnlySpan<ushort> cache, Span<float> attn)
    {
        fixed (ushort* pc = cache) Run(layer, blocks, q, n, pos0, null, pc, attn);
    }

    private static void Run(Mla layer, AbsorbedBlocks blocks, ReadOnlySpan<float> q, int n, int pos0, float* cache, ushort* bf16, Span<float> attn)
    {
        AbsorbedDecode d = _mine ??= new AbsorbedDecode();
        ModelConfig c = layer.Config;
        d.Reserve(c);
        fixed (float* pq = q, pa = attn)
        {
            (d._c, d._w, d._blocks, d._scale) = (c, layer.Weights, blocks, layer.Scale);
            d._q = pq;
            d._cache = cache;
            d._bf16 = bf16;
            d._attn = pa;
            d._pos0 = pos0;
            for (d._t0 = 0; d._t0 < n; d._t0 += AbsorbedBlocks.Tokens)
            {
                d._tokens = Math.Min(AbsorbedBlocks.Tokens, n - d._t0);
                WorkerPool.Shared.Run(d._fold, blocks.HeadGroups);
                for (d._first = 0; d._first < d._tokens; d._first = d._end)
                {
                    // As many tokens as the slots hold attend together; a token's blocks alone always fit.
                    int slots = 0;
                    for (d._end = d._first; d._end < d._tokens; d._end++)
                    {
                        int need = AbsorbedBlocks.SlotsFor(d.Count(d._end));
                        if (d._end > d._first && slots + need > blocks.Slots) break;
                        d._slot[d._end - d._first] = slots;
                        slots += need;
                    }
                    d._slot[d._end - d._first] = slots;
                    d._threads = WorkerPool.Shared.Threads;
                    d._parts = blocks.PartsFor(slots, d._threads);
                    d._run = d._parts > 1 ? 1 : Math.Max(1, slots / (RunsPerThread * d._threads));
                    d._pass++;
                    WorkerPool.Shared.Run(d._attend, d._parts > 1 ? slots * d._parts : (slots + d._run - 1) / d._run);
                    WorkerPool.Shared.Run(d._merge, blocks.HeadGroups);
                }
            }
            (d._w, d._blocks) = (null!, null!);
        }
    }

    /// <summary>Chunks of whole blocks each thread takes on average (from the shared counter), where a block's heads go
    /// in one part: a chunk is a run of consecutive blocks, each block's rows read ahead while the one before it is
    /// multiplied, so only a run's first block waits for memory (and not even that when the thread guessed its next
    /// run right). More runs share the work out more evenly at the end; fewer leave fewer first blocks.</summary>
    private const int RunsPerThread = 16;

    /// <summary>Slots the attending tokens' blocks fill (the entry past the last attending token's first slot).</summary>
    private int SlotsInUse => _slot[_end - _first];

    /// <summary>Cached positions folded token t attends over (causal: 0 .. its own).</summary>
    private int Count(int t) => _pos0 + _t0 + t + 1;

    /// <summary>Room for every head's products of <see cref="AbsorbedBlocks.Tokens"/> tokens (grown once per model shape).</summary>
    private void Reserve(ModelConfig c)
    {
        int heads = c.NHeads, t = AbsorbedBlocks.Tokens;
        if (_in.Length < heads * t * c.QkNopeHeadDim) _in = new float[heads * t * c.QkNopeHeadDim];
        if (_out.Length < heads * t * OutWidth(c)) _out = new float[heads * t * OutWidth(c)];
    }

    /// <summary>Values a token's products take in <see cref="_out"/>: the folded query (C) or the projected head (V).</summary>
    private static int OutWidth(ModelConfig c) => Math.Max(c.KvLoraRank, c.VHeadDim);

    /// <summary>Head h's q_nope of the folded tokens ([tokens, D]).</summary>
    private Span<float> In(int h) => _in.AsSpan(h * AbsorbedBlocks.Tokens * _c.QkNopeHeadDim, _tokens * _c.QkNopeHeadDim);

    /// <summary>Head h's products for the folded tokens, <paramref name="width"/> values a token.</summary>
    private Span<float> Out(int h, int width) => _out.AsSpan(h * AbsorbedBlocks.Tokens * OutWidth(_c), _tokens * width);

    /// <summary>Head h's query of token t0 + i ([D | R]).</summary>
    private ReadOnlySpan<float> Query(int i, int h) => new(_q + ((_t0 + i) * _c.NHeads + h) * _c.QkHeadDim, _c.QkHeadDim);

    /// <summary>Each token's packed query of head h [q_latent | q_pe], q_latent = W_UK[h]ᵀ q_nope (rows h·C.. of the
    /// transposed W_UK, one product for all the tokens).</summary>
    private sealed class FoldQueries(AbsorbedDecode d) : PoolJob
    {
        public override void Execute(int group)
        {
            int nope = d._c.QkNopeHeadDim, rank = d._c.KvLoraRank, tokens = d._tokens;
            for (int h = 4 * group; h < Math.Min(d._c.NHeads, 4 * group + 4); h++)
            {
                Span<float> x = d.In(h), y = d.Out(h, rank);
                for (int i = 0; i < tokens; i++) d.Query(i, h)[..nope].CopyTo(x.Slice(i * nope, nope));
                d._w.WkT.Forward(x, y, tokens, h * rank, rank);
                for (int i = 0; i < tokens; i++)
                {
                    Span<float> packed = d._blocks.Query(i, h);
                    y.Slice(i * rank, rank).CopyTo(packed);
                    d.Query(i, h)[nope..].CopyTo(packed[rank..]);
                }
            }
        }
    }

    /// <summary>Attending tokens over blocks of cached positions: where a slot's heads go in parts, chunk k is part
    /// k mod parts of slot k / parts; else chunk k is the run of slots k · run .. (k + 1) · run − 1, each attended
    /// whole. A slot's blocks (<see cref="AbsorbedBlocks.BlocksPerSlot"/>) go in order, each with the next one's rows
    /// read ahead, and the run's last reads ahead the first of run k + threads (the run the shared counter most likely
    /// hands this thread next).</summary>
    private sealed class AttendBlocks(AbsorbedDecode d) : PoolJob
    {
        [ThreadStatic] private static nint _aheadAt;  // the rows this thread last read ahead
        [ThreadStatic] private static long _aheadPass; // in which attend step

        public override void Execute(int chunk)
        {
            int part = 0, start, end, guess = -1;
            if (d._parts > 1)
            {
                start = chunk / d._parts;
                (part, end) = (chunk - start * d._parts, start + 1);
            }
            else
            {
                (start, guess) = (chunk * d._run, (chunk + d._threads) * d._run);
                end = Math.Min(start + d._run, d.SlotsInUse);
            }
            for (int slot = start; slot < end; slot++)
            {
                (int token, int b0, int b1) = d.Slot(slot);
                int following = slot + 1 < end ? slot + 1 : guess < d.SlotsInUse ? guess : -1; // read ahead after the slot's last block
                for (int b = b0; b < b1; b++)
                {
                    (long first, int rows) = d.Block(token, b);
                    (long nextFirst, int nextRows) = (-1, 0);
                    if (b + 1 < b1) (nextFirst, nextRows) = d.Block(token, b + 1);
                    else if (following >= 0)
                    {
                        (int nextToken, int nextBlock, _) = d.Slot(following);
                        (nextFirst, nextRows) = d.Block(nextToken, nextBlock);
                    }
                    bool fetched = _aheadPass == d._pass && _aheadAt == Address(first);
                    Attend(token, slot, first, rows, part, nextFirst, nextRows, fetched, fold: b > b0);
                    (_aheadAt, _aheadPass) = (nextFirst < 0 ? 0 : Address(nextFirst), d._pass);
                }
            }
        }

        private nint Address(long first) => d._bf16 is null ? (nint)(d._cache + first) : (nint)(d._bf16 + first);

        private void Attend(int token, int slot, long first, int rows, int part, long nextFirst, int nextRows, bool fetched, bool fold)
        {
            int width = d._c.LatentCacheWidth;
            if (d._bf16 is null)
                d._blocks.AttendRows(token, slot, new ReadOnlySpan<float>(d._cache + first, rows * width), rows, d._scale, part, d._parts,
                    nextFirst < 0 ? default : new ReadOnlySpan<float>(d._cache + nextFirst, nextRows * width), fetched, fold);
            else
                d._blocks.AttendRows(token, slot, new ReadOnlySpan<ushort>(d._bf16 + first, rows * width), rows, d._scale, part, d._parts,
                    nextFirst < 0 ? default : new ReadOnlySpan<ushort>(d._bf16 + nextFirst, nextRows * width), fetched, fold);
        }
    }

    /// <summary>The attending token slot <paramref name="slot"/> belongs to and the blocks b0 .. b1 − 1 it holds.</summary>
    private (int Token, int B0, int B1) Slot(int slot)
    {
        int i = 0;
        while (_slot[i + 1] <= slot) i++;
        int count = Count(_first + i), per = AbsorbedBlocks.BlocksPerSlot(count), b0 = (slot - _slot[i]) * per;
        return (_first + i, b0, Math.Min(b0 + per, AbsorbedBlocks.Blocks(count)));
    }

    /// <summary>The offset of block <paramref name="b"/>'s first cached value for token <paramref name="token"/> and
    /// the block's rows.</summary>
    private (long First, int Rows) Block(int token, int b)
    {
        int s0 = b * LatentAttention.BlockPositions;
        return ((long)s0 * _c.LatentCacheWidth, Math.Min(LatentAttention.BlockPositions, Count(token) - s0));
    }

    /// <summary>Head h's latent Σ p c_kv of each attending token merged over its slots; after the last token, every
    /// token's out_h = W_UV[h] latent (kv_b_proj's v rows of h, one product for all the tokens).</summary>
    private sealed class MergeAndProject(AbsorbedDecode d) : PoolJob
    {
        public override void Execute(int group)
        {
            ModelConfig c = d._c;
            int nope = c.QkNopeHeadDim, v = c.VHeadDim, tokens = d._tokens;
            for (int h = 4 * group; h < Math.Min(c.NHeads, 4 * group + 4); h++)
            {
                for (int t = d._first; t < d._end; t++)
                    d._blocks.Merge(d._slot[t - d._first], AbsorbedBlocks.SlotsFor(d.Count(t)), h, t);
                if (d._end < tokens) continue;
                Span<float> y = d.Out(h, v);
                d._w.WkvB.Forward(d._blocks.Latents(h, tokens), y, tokens, h * (nope + v) + nope, v);
                for (int i = 0; i < tokens; i++)
                    y.Slice(i * v, v).CopyTo(new Span<float>(d._attn + ((d._t0 + i) * c.NHeads + h) * v, v));
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
