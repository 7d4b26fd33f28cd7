using System.Numerics.Tensors;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>The forward pass: embedding → blocks (RMSNorm, MLA, RMSNorm, MLP or MoE, each with a residual) →
/// final norm → lm_head; and the multi-token-prediction module on top of the final hidden states.</summary>
internal sealed class Transformer(ModelConfig c, ModelWeights w)
{
    private readonly RotaryEmbedding _rope = new(c);

    /// <param name="tokens">[n] token ids at positions cache.Length ..</param>
    /// <param name="logits">[n, vocab] when <paramref name="allPositions"/>, else [vocab] for the last token</param>
    public void Forward(ReadOnlySpan<int> tokens, LatentKvCache cache, RunState s, AttentionMode mode, bool allPositions,
        IActivationObserver? observer, Span<float> logits)
    {
        int n = tokens.Length, d = c.Dim, pos0 = cache.Length;
        s.Ensure(n);
        Span<float> x = s.X.AsSpan(0, n * d);
        for (int t = 0; t < n; t++) w.Embed.Row(tokens[t]).CopyTo(x.Slice(t * d, d));
        PrepareRope(n, pos0, s);
        bool absorbed = mode == AttentionMode.Absorbed || mode == AttentionMode.Auto && n == 1;
        for (int l = 0; l < c.NLayers; l++)
            Block(w.Blocks[l], l, x, n, pos0, cache.Layer(l), s, absorbed, observer);
        cache.Commit(n);

        Span<float> hidden = s.Hidden.AsSpan(0, n * d);
        RmsNorm.Forward(x, w.Norm, hidden, (float)c.RmsNormEps);
        if (allPositions) MatMul.Forward(hidden, w.Head.Data, logits, n, d, c.VocabSize);
        else MatMul.Forward(hidden.Slice((n - 1) * d, d), w.Head.Data, logits, 1, d, c.VocabSize);
    }

    /// <summary>MTP module k: for each i, predicts the token after <paramref name="nextTokens"/>[i] from
    /// eh_proj(concat(enorm(embed(nextTokens[i])), hnorm(hidden[i]))) through its own block and head.</summary>
    /// <param name="hidden">[n, dim] main-model hidden states after the final norm</param>
    /// <param name="logits">[n, vocab]</param>
    public void ForwardMtp(int k, ReadOnlySpan<int> nextTokens, ReadOnlySpan<float> hidden, LatentKvCache cache, RunState s,
        AttentionMode mode, Span<float> logits)
    {
        MtpWeights m = w.Mtp[k];
        int n = nextTokens.Length, d = c.Dim, pos0 = cache.Length;
        s.Ensure(n);
        Span<float> cat = s.Cat.AsSpan(0, n * 2 * d);
        float eps = (float)c.RmsNormEps;
        for (int t = 0; t < n; t++)
        {
            RmsNorm.Forward(m.Embed.Row(nextTokens[t]), m.ENorm, cat.Slice(t * 2 * d, d), eps);
            RmsNorm.Forward(hidden.Slice(t * d, d), m.HNorm, cat.Slice(t * 2 * d + d, d), eps);
        }
        Span<float> x = s.X.AsSpan(0, n * d);
        MatMul.Forward(cat, m.EhProj.Data, x, n, 2 * d, d);
        PrepareRope(n, pos0, s);
        bool absorbed = mode == AttentionMode.Absorbed || mode == AttentionMode.Auto && n == 1;
        Block(m.Block, c.NLayers + k, x, n, pos0, cache.Layer(k), s, absorbed, observer: null);
        cache.Commit(n);
        Span<float> normed = s.Xb.AsSpan(0, n * d);
        RmsNorm.Forward(x, m.HeadNorm, normed, eps);
        MatMul.Forward(normed, m.Head.Data, logits, n, d, c.VocabSize);
    }

    private void PrepareRope(int n, int pos0, RunState s)
    {
        int half = c.QkRopeHeadDim / 2;
        for (int t = 0; t < n; t++) _rope.CosSin(pos0 + t, s.Cos.AsSpan(t * half, half), s.Sin.AsSpan(t * half, half));
    }

    /// <summary>x += attn(attn_norm(x)); x += ffn(ffn_norm(x)).</summary>
    private void Block(BlockWeights b, int layer, Span<float> x, int n, int pos0, Span<float> cache, RunState s, bool absorbed,
        IActivationObserver? observer)
    {
        int d = c.Dim;
        float eps = (float)c.RmsNormEps;
        Span<float> xb = s.Xb.AsSpan(0, n * d), o = s.Out.AsSpan(0, n * d);
        RmsNorm.Forward(x, b.AttnNorm, xb, eps);
        Mla.Forward(c, b.Attn, xb, n, pos0, cache, s, absorbed, o);
        TensorPrimitives.Add(x, o, x);
        RmsNorm.Forward(x, b.FfnNorm, xb, eps);
        if (b.Moe is { } moe) FeedForward.Moe(c, moe, xb, n, pos0, layer, s, observer, o);
        else FeedForward.Mlp(c, b.Mlp!, xb, n, s, o);
        TensorPrimitives.Add(x, o, x);
    }
}
