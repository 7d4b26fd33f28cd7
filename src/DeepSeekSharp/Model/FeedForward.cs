using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Model;

/// <summary>The feed-forward half of a block: a dense SwiGLU MLP, or DeepSeekMoE
/// (Σ wᵢ·expertᵢ(x) over the routed experts, plus the shared experts with weight 1).</summary>
internal static class FeedForward
{
    /// <summary>y = down(silu(gate x) ⊙ up x) for n rows.</summary>
    public static void Mlp(ModelConfig c, MlpWeights w, ReadOnlySpan<float> xb, int n, RunState s, Span<float> output) =>
        Mlp(w, xb, n, s.G, s.U, s.H, output);

    private static void Mlp(MlpWeights w, ReadOnlySpan<float> xb, int n, Span<float> gBuf, Span<float> uBuf, Span<float> hBuf, Span<float> output)
    {
        int inter = w.InterDim;
        Span<float> g = gBuf[..(n * inter)], u = uBuf[..(n * inter)], h = hBuf[..(n * inter)];
        w.Gate.Forward(xb, g, n);
        w.Up.Forward(xb, u, n);
        SwiGlu.Forward(g, u, h);
        w.Down.Forward(h, output, n);
    }

    /// <summary>Routes every token, gathers the tokens of each chosen expert into consecutive slots, runs the
    /// experts — whole experts in parallel, largest first, each over all its tokens (one weight read serves them
    /// all); a single token's experts and the shared ones by parts of their rows (<see cref="TokenExpertsJob"/>) —
    /// and then adds each expert's weighted outputs to its tokens. Every token receives its experts'
    /// contributions in ascending expert order whatever the batch or thread count, so a token's result is the same
    /// alone or batched.</summary>
    public static void Moe(ModelConfig c, MoeWeights w, ReadOnlySpan<float> xb, int n, int layer, RunState s,
        IActivationObserver? observer, Span<float> output)
    {
        int d = c.Dim, nExperts = c.NRoutedExperts, k = c.NActivatedExperts;
        Span<float> logits = s.RouterLogits.AsSpan(0, n * nExperts);
        w.Router.Forward(xb, logits, n);
        observer?.OnTensor(TensorName.FfnMoeLogits, layer, logits, n, nExperts);
        bool byParts = n <= TokenExpertsJob.MaxTokens && WorkerPool.Shared.Threads > 1;
        if (!byParts)
        {
            if (w.Shared is { } shared) Mlp(c, shared, xb, n, s, output);
            else output[..(n * d)].Clear();
        }

        Span<int> chosen = s.RouteExperts.AsSpan(0, n * k);
        Span<float> weights = s.RouteWeights.AsSpan(0, n * k);
        for (int t = 0; t < n; t++)
        {
            Router.Route(c, logits.Slice(t * nExperts, nExperts), w.RouterBias, s.RouterScores, s.RouterChoice, chosen.Slice(t * k, k), weights.Slice(t * k, k));
            observer?.OnRouting(layer, s.Positions[t], chosen.Slice(t * k, k), weights.Slice(t * k, k));
        }
        int[] start = s.ExpertStart, rows = s.GatherRows;
        float[] rowWeights = s.GatherWeights;
        int slots = 0, used = 0;
        for (int e = 0; e < nExperts; e++)
        {
            start[e] = slots;
            for (int t = 0; t < n; t++)
            {
                int at = chosen.Slice(t * k, k).IndexOf(e);
                if (at < 0) continue;
                rows[slots] = t;
                rowWeights[slots] = weights[t * k + at];
                xb.Slice(t * d, d).CopyTo(s.GatherX.AsSpan(slots * d, d));
                slots++;
            }
            if (slots > start[e]) s.ExpertOrder[used++] = e;
        }
        start[nExperts] = slots;
        // Largest experts first, so the last ones to finish are short (ties in expert order: deterministic).
        int[] order = s.ExpertOrder;
        for (int i = 1; i < used; i++)
        {
            int e = order[i], m = start[e + 1] - start[e], j = i - 1;
            for (; j >= 0 && start[order[j] + 1] - start[order[j]] < m; j--) order[j + 1] = order[j];
            order[j + 1] = e;
        }
        if (byParts) TokenExpertsJob.Run(w, s, xb[..(n * d)], n, used, output[..(n * d)]);
        else ExpertJob.Run(w, s, used);
        for (int e = 0; e < nExperts; e++)
            for (int i = start[e]; i < start[e + 1]; i++)
                Axpy.Compute(s.ExpertOut.AsSpan(i * d, d), rowWeights[i], output.Slice(rows[i] * d, d));
    }

    /// <summary>One routed expert per chunk over its gathered tokens; the matrix products inside run on the
    /// chunk's thread, so two experts proceed at once instead of two halves of each.</summary>
    private sealed class ExpertJob : PoolJob
    {
        [ThreadStatic] private static ExpertJob? _mine;
        private MoeWeights _w = null!;
        private RunState _s = null!;

        public static void Run(MoeWeights w, RunState s, int experts)
        {
            ExpertJob job = _mine ??= new ExpertJob();
            (job._w, job._s) = (w, s);
            WorkerPool.Shared.Run(job, experts);
            (job._w, job._s) = (null!, null!);
        }

        public override void Execute(int chunk)
        {
            RunState s = _s;
            int e = s.ExpertOrder[chunk], first = s.ExpertStart[e], m = s.ExpertStart[e + 1] - first;
            MlpWeights x = _w.Experts[e];
            int d = x.Down.Rows, inter = x.InterDim;
            Mlp(x, s.GatherX.AsSpan(first * d, m * d), m, s.G.AsSpan(first * inter), s.U.AsSpan(first * inter), s.H.AsSpan(first * inter),
                s.ExpertOut.AsSpan(first * d, m * d));
        }
    }

    /// <summary>A few tokens' experts (a decode step, a pass verifying drafts, a small batch), the shared ones and the
    /// routed ones they chose, split by rows over the pool in two passes: gate and up rows (and SwiGLU over them) of
    /// every expert, then the down rows; each expert's rows over all its tokens at once. Whole experts as chunks
    /// (<see cref="ExpertJob"/>) left one thread running the last expert while the other waited (six experts of equal
    /// size on two threads ended a fifth of an expert apart on average); here large parts come first and the last
    /// experts are cut small, so the threads end close together. Activations are prepared once per expert and pass,
    /// and every output row is the same dot product as in the whole product, so the results are unchanged. The
    /// shared experts' intermediates of every token go first in G/U/H, then each routed slot's; the shared down rows
    /// go straight into the output, the routed ones into their slots.</summary>
    private sealed unsafe class TokenExpertsJob : PoolJob
    {
        [ThreadStatic] private static TokenExpertsJob? _mine;
        private const int LargeRows = 512, SmallRows = 128, SmallUnits = 2; // the last SmallUnits units in small parts

        /// <summary>Most tokens taken by parts: beyond, experts carry enough tokens each to be run whole.</summary>
        public const int MaxTokens = 8;

        private MoeWeights _w = null!;
        private RunState _s = null!;
        private float* _x, _output;
        private int _n;
        private bool _down;
        // Chunk i: rows [Row, Row + Count) of unit Unit (0: the shared experts, 1 + j: the j-th used routed expert).
        private (int Unit, int Row, int Count)[] _chunks = [];
        // Per unit: the activations its gate, up and down products read (prepared on the calling thread), and their scratch.
        private QuantizedActivations?[] _act = [];
        private QuantizedActivations[] _scratch = [];
        private const int Gate = 0, Up = 1, Down = 2;

        /// <param name="x">[n, dim] the tokens' inputs</param>
        /// <param name="output">[n, dim] the shared experts' output (cleared when there are none)</param>
        public static void Run(MoeWeights w, RunState s, ReadOnlySpan<float> x, int n, int used, Span<float> output)
        {
            TokenExpertsJob job = _mine ??= new TokenExpertsJob();
            (job._w, job._s, job._n) = (w, s, n);
            if (w.Shared is null) output.Clear();
            int units = used + 1, first = w.Shared is null ? 1 : 0;
            job.Reserve(units);
            fixed (float* px = x, po = output)
            {
                job._x = px;
                job._output = po;
                for (int pass = 0; pass < 2; pass++)
                {
                    job._down = pass == 1;
                    int chunks = 0;
                    for (int u = first; u < units; u++)
                    {
                        MlpWeights m = job.Unit(u);
                        int rows = job._down ? m.Down.Rows : m.InterDim, part = u >= units - SmallUnits ? SmallRows : LargeRows;
                        for (int r = 0; r < rows; r += part) job._chunks[chunks++] = (u, r, Math.Min(part, rows - r));
                        job.PrepareUnit(u, m);
                    }
                    WorkerPool.Shared.Run(job, chunks);
                }
                job._x = job._output = null;
            }
            (job._w, job._s) = (null!, null!);
        }

        /// <summary>Room for the chunks of <paramref name="units"/> units (grown once, on the first layer).</summary>
        private void Reserve(int units)
        {
            int most = 0;
            for (int u = 0; u < units; u++)
            {
                MlpWeights m = u == 0 ? _w.Shared ?? _w.Experts[0] : _w.Experts[0];
                most += (Math.Max(m.InterDim, m.Down.Rows) + SmallRows - 1) / SmallRows;
            }
            if (_chunks.Length < most) _chunks = new (int, int, int)[most];
            if (_scratch.Length < 3 * units)
            {
                _scratch = [.. Enumerable.Range(0, 3 * units).Select(_ => new QuantizedActivations())];
                _act = new QuantizedActivations?[3 * units];
            }
        }

        /// <summary>The activations of unit u for this pass: its tokens' x for gate and up (shared when their formats
        /// agree), h for down.</summary>
        private void PrepareUnit(int u, MlpWeights m)
        {
            int at = 3 * u, tokens = Tokens(u);
            if (_down)
            {
                _act[at + Down] = m.Down.PrepareFor(_s.H.AsSpan(InterOffset(u), tokens * m.InterDim), tokens, _scratch[at + Down]);
                return;
            }
            ReadOnlySpan<float> x = Input(u);
            _act[at + Gate] = m.Gate.PrepareFor(x, tokens, _scratch[at + Gate]);
            _act[at + Up] = m.Up.Format == m.Gate.Format ? _act[at + Gate] : m.Up.PrepareFor(x, tokens, _scratch[at + Up]);
        }

        private MlpWeights Unit(int u) => u == 0 ? _w.Shared! : _w.Experts[_s.ExpertOrder[u - 1]];

        /// <summary>The first gathered slot of the u-th unit's routed expert.</summary>
        private int Slot(int u) => _s.ExpertStart[_s.ExpertOrder[u - 1]];

        /// <summary>Tokens of unit u: all of them for the shared experts, those routed to it for a routed one.</summary>
        private int Tokens(int u) => u == 0 ? _n : _s.ExpertStart[_s.ExpertOrder[u - 1] + 1] - Slot(u);

        /// <summary>Unit u's inputs [Tokens(u), dim]: the tokens, or the routed expert's gathered slots.</summary>
        private ReadOnlySpan<float> Input(int u)
        {
            int d = _w.Experts[0].Gate.Cols;
            return u == 0 ? new ReadOnlySpan<float>(_x, _n * d) : _s.GatherX.AsSpan(Slot(u) * d, Tokens(u) * d);
        }

        private int InterOffset(int u) => u == 0 ? 0 : (_w.Shared?.InterDim ?? 0) * _n + Slot(u) * _w.Experts[0].InterDim;

        public override void Execute(int chunk)
        {
            (int u, int r0, int count) = _chunks[chunk];
            MlpWeights m = Unit(u);
            RunState s = _s;
            int off = InterOffset(u), tokens = Tokens(u), inter = m.InterDim;
            if (!_down)
            {
                ReadOnlySpan<float> x = Input(u);
                Span<float> g = s.G.AsSpan(off, tokens * inter), up = s.U.AsSpan(off, tokens * inter), h = s.H.AsSpan(off, tokens * inter);
                m.Gate.ForwardRows(_act[3 * u + Gate], x, tokens, g[r0..], inter, r0, count);
                m.Up.ForwardRows(_act[3 * u + Up], x, tokens, up[r0..], inter, r0, count);
                for (int t = 0; t < tokens; t++)
                    SwiGlu.Forward(g.Slice(t * inter + r0, count), up.Slice(t * inter + r0, count), h.Slice(t * inter + r0, count));
            }
            else
            {
                int d = m.Down.Rows;
                Span<float> y = u == 0 ? new Span<float>(_output, _n * d) : s.ExpertOut.AsSpan(Slot(u) * d, tokens * d);
                m.Down.ForwardRows(_act[3 * u + Down], s.H.AsSpan(off, tokens * inter), tokens, y[r0..], d, r0, count);
            }
        }
    }
}
