using DeepSeekSharp.Kernels;

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
    /// all) — and then adds each expert's weighted outputs to its tokens. Every token receives its experts'
    /// contributions in ascending expert order whatever the batch or thread count, so a token's result is the same
    /// alone or batched.</summary>
    public static void Moe(ModelConfig c, MoeWeights w, ReadOnlySpan<float> xb, int n, int layer, RunState s,
        IActivationObserver? observer, Span<float> output)
    {
        int d = c.Dim, nExperts = c.NRoutedExperts, k = c.NActivatedExperts;
        Span<float> logits = s.RouterLogits.AsSpan(0, n * nExperts);
        w.Router.Forward(xb, logits, n);
        observer?.OnTensor(TensorName.FfnMoeLogits, layer, logits, n, nExperts);
        if (w.Shared is { } shared) Mlp(c, shared, xb, n, s, output);
        else output[..(n * d)].Clear();

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
        ExpertJob.Run(w, s, used);
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
}
