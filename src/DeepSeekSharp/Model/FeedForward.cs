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

    public static void Moe(ModelConfig c, MoeWeights w, ReadOnlySpan<float> xb, int n, int layer, RunState s,
        IActivationObserver? observer, Span<float> output)
    {
        int d = c.Dim, nExperts = c.NRoutedExperts;
        Span<float> logits = s.RouterLogits.AsSpan(0, n * nExperts);
        w.Router.Forward(xb, logits, n);
        if (w.Shared is { } shared) Mlp(c, shared, xb, n, s, output);
        else output[..(n * d)].Clear();

        Span<int> experts = s.Experts;
        Span<float> weights = s.ExpertWeights;
        Span<float> expertOut = s.ExpertOut.AsSpan(0, d);
        for (int t = 0; t < n; t++)
        {
            Router.Route(c, logits.Slice(t * nExperts, nExperts), w.RouterBias, s.RouterScores, s.RouterChoice, experts, weights);
            observer?.OnRouting(layer, s.Positions[t], experts, weights);
            ReadOnlySpan<float> xt = xb.Slice(t * d, d);
            Span<float> yt = output.Slice(t * d, d);
            for (int i = 0; i < experts.Length; i++)
            {
                Mlp(c, w.Experts[experts[i]], xt, 1, s, expertOut);
                Axpy.Compute(expertOut, weights[i], yt);
            }
        }
    }
}
