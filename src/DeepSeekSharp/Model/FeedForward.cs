using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>The feed-forward half of a block: a dense SwiGLU MLP, or DeepSeekMoE
/// (Σ wᵢ·expertᵢ(x) over the routed experts, plus the shared experts with weight 1).</summary>
internal static class FeedForward
{
    /// <summary>y = down(silu(gate x) ⊙ up x) for n rows.</summary>
    public static void Mlp(ModelConfig c, MlpWeights w, ReadOnlySpan<float> xb, int n, RunState s, Span<float> output)
    {
        int d = c.Dim, inter = w.InterDim;
        Span<float> g = s.G.AsSpan(0, n * inter), u = s.U.AsSpan(0, n * inter), h = s.H.AsSpan(0, n * inter);
        w.Gate.Forward(xb, g, n);
        w.Up.Forward(xb, u, n);
        SwiGlu.Forward(g, u, h);
        w.Down.Forward(h, output, n);
    }

    /// <summary>Routes every token, then runs each chosen expert once over all the tokens routed to it (one
    /// weight read serves them all) and adds its weighted output to theirs. Every token receives its experts'
    /// contributions in ascending expert order whatever the batch, so a token's result is the same alone or
    /// batched.</summary>
    public static void Moe(ModelConfig c, MoeWeights w, ReadOnlySpan<float> xb, int n, int layer, RunState s,
        IActivationObserver? observer, Span<float> output)
    {
        int d = c.Dim, nExperts = c.NRoutedExperts, k = c.NActivatedExperts;
        Span<float> logits = s.RouterLogits.AsSpan(0, n * nExperts);
        w.Router.Forward(xb, logits, n);
        if (w.Shared is { } shared) Mlp(c, shared, xb, n, s, output);
        else output[..(n * d)].Clear();

        Span<int> chosen = s.RouteExperts.AsSpan(0, n * k);
        Span<float> weights = s.RouteWeights.AsSpan(0, n * k);
        for (int t = 0; t < n; t++)
        {
            Router.Route(c, logits.Slice(t * nExperts, nExperts), w.RouterBias, s.RouterScores, s.RouterChoice, chosen.Slice(t * k, k), weights.Slice(t * k, k));
            observer?.OnRouting(layer, s.Positions[t], chosen.Slice(t * k, k), weights.Slice(t * k, k));
        }
        Span<int> rows = s.GatherRows.AsSpan(0, n);
        Span<float> rowWeights = s.GatherWeights.AsSpan(0, n);
        for (int e = 0; e < nExperts; e++)
        {
            int m = 0;
            for (int t = 0; t < n; t++)
            {
                int at = chosen.Slice(t * k, k).IndexOf(e);
                if (at < 0) continue;
                rows[m] = t;
                rowWeights[m++] = weights[t * k + at];
            }
            if (m == 0) continue;
            Span<float> gathered = s.GatherX.AsSpan(0, m * d), result = s.ExpertOut.AsSpan(0, m * d);
            for (int i = 0; i < m; i++) xb.Slice(rows[i] * d, d).CopyTo(gathered.Slice(i * d, d));
            Mlp(c, w.Experts[e], gathered, m, s, result);
            for (int i = 0; i < m; i++) Axpy.Compute(result.Slice(i * d, d), rowWeights[i], output.Slice(rows[i] * d, d));
        }
    }
}
