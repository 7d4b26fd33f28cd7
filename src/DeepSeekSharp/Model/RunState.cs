namespace DeepSeekSharp.Model;

/// <summary>Scratch activations of one sequence's forward pass. Buffers grow to the largest batch seen and are
/// then reused, so a decode step allocates nothing. Buffers indexed by position are sized to the cache capacity.</summary>
internal sealed class RunState(ModelConfig c, int capacity)
{
    private int _batch;

    public float[] X = [];          // [n, dim] residual stream
    public float[] Xb = [];         // [n, dim] normed input of a sub-layer
    public float[] Out = [];        // [n, dim] sub-layer output
    public float[] Hidden = [];     // [n, dim] after the final norm
    public float[] Cat = [];        // [n, 2·dim] MTP: [enorm(embed) | hnorm(h)]
    public float[] Qa = [];         // [n, qLoraRank]
    public float[] Q = [];          // [n, nHeads·qkHeadDim] per head [q_nope | q_pe]
    public float[] Kv = [];         // [n, kvLoraRank + qkRopeHeadDim] kv_a_proj_with_mqa output
    public int[] Positions = [];    // [n] position of each row in its sequence
    public float[] Cos = [];        // [n, qkRopeHeadDim/2]
    public float[] Sin = [];        // [n, qkRopeHeadDim/2]
    public float[] AttnOut = [];    // [n, nHeads·vHeadDim]
    public float[] QLatent = [];    // [nHeads, kvLoraRank] absorbed query per head
    public float[] LatentOut = [];  // [nHeads, kvLoraRank] attended latent per head
    public float[] Scores = [];     // [nHeads, capacity] attention probabilities per head
    public Kernels.AbsorbedBlocks? Blocks; // blocked absorbed attention of all heads, where the CPU has it
    public float[] Latents = [];    // [span, kvLoraRank] contiguous latents (expanded path)
    private float[]? _kvExpanded;   // pinned; KvExpanded starts at its first 64-byte boundary
    private int _kvExpandedLength;
    /// <summary>[span, nHeads·(qkNopeHeadDim + vHeadDim)] decompressed k_nope | v, 64-byte aligned.</summary>
    public Span<float> KvExpanded => Kernels.AlignedScratch.Grow(ref _kvExpanded, _kvExpandedLength);
    public float[] RouterLogits = [];  // [n, nRoutedExperts]
    public float[] RouterScores = new float[Math.Max(c.NRoutedExperts, 1)];
    public float[] RouterChoice = new float[Math.Max(c.NRoutedExperts, 1)];
    public float[] G = [], U = [], H = []; // [n, widest MLP] SwiGLU intermediates
    public float[] ExpertOut = [];  // [n·k, dim] each expert's outputs for the tokens routed to it, expert after expert
    public float[] GatherX = [];    // [n·k, dim] the inputs of those tokens, in the same slots
    public int[] GatherRows = [];   // [n·k] which token each slot is
    public float[] GatherWeights = []; // [n·k] and its routing weight for that slot's expert
    public int[] ExpertStart = new int[Math.Max(c.NRoutedExperts, 1) + 1]; // first slot of each expert
    public int[] ExpertOrder = new int[Math.Max(c.NRoutedExperts, 1)];     // experts by descending token count
    public int[] RouteExperts = []; // [n, k] chosen experts per token
    public float[] RouteWeights = []; // [n, k] their weights

    /// <summary>Makes room for a batch of <paramref name="n"/> tokens.</summary>
    public void Ensure(int n)
    {
        if (n > _batch)
        {
            _batch = n;
            int d = c.Dim, k = Math.Max(c.NActivatedExperts, 1);
            int mlp = Math.Max(c.InterDim, c.MoeInterDim * (c.NSharedExperts + k)); // a token's shared and routed experts side by side
            X = new float[n * d]; Xb = new float[n * d]; Out = new float[n * d]; Hidden = new float[n * d];
            Cat = new float[n * 2 * d];
            Qa = new float[n * c.QLoraRank];
            Q = new float[n * c.NHeads * c.QkHeadDim];
            Kv = new float[n * c.LatentCacheWidth];
            Positions = new int[n];
            Cos = new float[n * c.QkRopeHeadDim / 2]; Sin = new float[n * c.QkRopeHeadDim / 2];
            AttnOut = new float[n * c.NHeads * c.VHeadDim];
            RouterLogits = new float[n * c.NRoutedExperts];
            G = new float[n * mlp]; U = new float[n * mlp]; H = new float[n * mlp];
            ExpertOut = new float[n * k * d];
            GatherX = new float[n * k * d];
            GatherRows = new int[n * k];
            GatherWeights = new float[n * k];
            RouteExperts = new int[n * Math.Max(c.NActivatedExperts, 1)];
            RouteWeights = new float[n * Math.Max(c.NActivatedExperts, 1)];
        }
    }

    /// <summary>Per-head attention scratch (heads run in parallel); returns the blocked absorbed attention's state
    /// where the CPU has it.</summary>
    public Kernels.AbsorbedBlocks? EnsureHeads()
    {
        if (Scores.Length > 0) return Blocks;
        Scores = new float[c.NHeads * capacity];
        QLatent = new float[c.NHeads * c.KvLoraRank];
        LatentOut = new float[c.NHeads * c.KvLoraRank];
        Blocks = Kernels.AbsorbedBlocks.For(c.NHeads, c.KvLoraRank, c.QkRopeHeadDim, capacity);
        return Blocks;
    }

    private float[] _cacheRow = [], _widened = [];

    /// <summary>One cache row made before it is rounded into a bfloat16 cache.</summary>
    public Span<float> CacheRow(int width)
    {
        if (_cacheRow.Length < width) _cacheRow = new float[width];
        return _cacheRow.AsSpan(0, width);
    }

    /// <summary>The first <paramref name="positions"/> rows of a bfloat16 cache's layer widened to float32 (for the
    /// attention paths that read the cache whole), in scratch grown once up to the capacity.</summary>
    public ReadOnlySpan<float> Widened(LatentKvCache kv, int layer, int positions)
    {
        int floats = positions * kv.Width;
        if (_widened.Length < floats) _widened = new float[Math.Max(floats, Math.Min(2 * _widened.Length, kv.Capacity * kv.Width))];
        kv.ReadRows(layer, 0, _widened.AsSpan(0, floats));
        return _widened.AsSpan(0, floats);
    }

    /// <summary>Buffers of the expanded path, sized on first use and grown geometrically up to the capacity
    /// (they hold every position's decompressed K/V).</summary>
    public void EnsureExpanded(int span)
    {
        if (Latents.Length < span * c.KvLoraRank)
        {
            span = Math.Min(Math.Max(span, Latents.Length / c.KvLoraRank * 2), capacity);
            Latents = new float[span * c.KvLoraRank];
            _kvExpandedLength = span * c.NHeads * (c.QkNopeHeadDim + c.VHeadDim);
            _kvExpanded = null;
        }
    }
}
