using System.Numerics.Tensors;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>The forward pass: embedding → blocks (RMSNorm, MLA, RMSNorm, MLP or MoE, each with a residual) →
/// final norm → lm_head; and the multi-token-prediction module on top of the final hidden states.</summary>
internal sealed class Transformer(ModelConfig c, ModelWeights w)
{
    private readonly RotaryEmbedding _rope = new(c);
    private readonly Mla[] _attention = [.. w.Blocks.Select(b => new Mla(c, b.Attn))];
    private readonly Mla[] _mtpAttention = [.. w.Mtp.Select(m => new Mla(c, m.Block.Attn))];

    /// <param name="tokens">[n] token ids at positions cache.Length ..</param>
    /// <param name="logits">[n, vocab] when <paramref name="allPositions"/>, else [vocab] for the last token</param>
    /// <param name="decoding">the tokens are decode steps (see <see cref="SequenceSlice.Decoding"/>)</param>
    public void Forward(ReadOnlySpan<int> tokens, LatentKvCache cache, RunState s, AttentionMode mode, bool allPositions,
        IActivationObserver? observer, Span<float> logits, bool decoding = false)
    {
        Span<SequenceSlice> one = [new SequenceSlice(cache, 0, tokens.Length, decoding)];
        Forward(tokens, one, s, mode, allPositions, observer, logits);
    }

    /// <summary>One pass over the tokens of several sequences: rows [Start, Start + Count) of
    /// <paramref name="tokens"/> belong to slice i and continue its cache. Every projection reads each weight once
    /// for all rows; attention runs per sequence; no row's arithmetic depends on another's, so a sequence gets
    /// bit-identical logits alone or in a batch.</summary>
    /// <param name="logits">[n, vocab] when <paramref name="allPositions"/>, else each slice's last LogitRows rows</param>
    public void Forward(ReadOnlySpan<int> tokens, ReadOnlySpan<SequenceSlice> slices, RunState s, AttentionMode mode, bool allPositions,
        IActivationObserver? observer, Span<float> logits)
    {
        int n = tokens.Length, d = c.Dim;
        s.Ensure(n);
        Span<float> x = s.X.AsSpan(0, n * d);
        for (int t = 0; t < n; t++) w.Embed.DequantizeRow(tokens[t], x.Slice(t * d, d));
        PrepareRope(slices, s);
        for (int l = 0; l < c.NLayers; l++)
            Block(w.Blocks[l], _attention[l], l, x, n, slices, l, s, mode, observer);
        foreach (SequenceSlice slice in slices) slice.Cache.Commit(slice.Count);

        Span<float> hidden = s.Hidden.AsSpan(0, n * d); // [n, dim]
        RmsNorm.Forward(x, w.Norm, hidden, (float)c.RmsNormEps);
        observer?.OnTensor(TensorName.ResultNorm, -1, hidden, n, d);
        if (allPositions)
        {
            w.Head.Forward(hidden, logits, n);
            observer?.OnTensor(TensorName.ResultOutput, -1, logits[..(n * c.VocabSize)], n, c.VocabSize);
            return;
        }
        Head(w.Head, hidden, slices, s, logits);
    }

    /// <summary>lm_head over each slice's last <see cref="SequenceSlice.LogitRows"/> rows, gathered so the head is read
    /// once for all sequences; logits in slice order.</summary>
    private void Head(DeepSeekSharp.Linear.Matrix head, ReadOnlySpan<float> hidden, ReadOnlySpan<SequenceSlice> slices, RunState s, Span<float> logits)
    {
        int d = c.Dim, rows = 0;
        foreach (SequenceSlice slice in slices) rows += slice.LogitRows;
        Span<float> last = s.Xb.AsSpan(0, rows * d);
        rows = 0;
        foreach (SequenceSlice slice in slices)
        {
            int from = slice.Start + slice.Count - slice.LogitRows;
            hidden.Slice(from * d, slice.LogitRows * d).CopyTo(last.Slice(rows * d));
            rows += slice.LogitRows;
        }
        head.Forward(last, logits, rows);
    }

    /// <summary>MTP module k: for each i, predicts the token after <paramref name="nextTokens"/>[i] from
    /// eh_proj(concat(enorm(embed(nextTokens[i])), hnorm(hidden[i]))) through its own block and head.</summary>
    /// <param name="hidden">[n, dim] main-model hidden states after the final norm</param>
    /// <param name="logits">[n, vocab] when <paramref name="allPositions"/>, else [vocab] for the last row</param>
    public void ForwardMtp(int k, ReadOnlySpan<int> nextTokens, ReadOnlySpan<float> hidden, LatentKvCache cache, RunState s,
        AttentionMode mode, Span<float> logits, bool allPositions = true, bool decoding = false)
    {
        Span<SequenceSlice> one = [new SequenceSlice(cache, 0, nextTokens.Length, decoding, allPositions ? nextTokens.Length : 1)];
        ForwardMtp(k, nextTokens, hidden, one, s, mode, logits);
    }

    /// <summary>The MTP module over rows of several sequences (slices over their MTP caches); logits of each slice's
    /// last <see cref="SequenceSlice.LogitRows"/> rows, in slice order.</summary>
    public void ForwardMtp(int k, ReadOnlySpan<int> nextTokens, ReadOnlySpan<float> hidden, ReadOnlySpan<SequenceSlice> slices, RunState s,
        AttentionMode mode, Span<float> logits)
    {
        MtpWeights m = w.Mtp[k];
        int n = nextTokens.Length, d = c.Dim;
        s.Ensure(n);
        Span<float> cat = s.Cat.AsSpan(0, n * 2 * d);
        float eps = (float)c.RmsNormEps;
        for (int t = 0; t < n; t++)
        {
            Span<float> embedding = s.Xb.AsSpan(0, d);
            m.Embed.DequantizeRow(nextTokens[t], embedding);
            RmsNorm.Forward(embedding, m.ENorm, cat.Slice(t * 2 * d, d), eps);
            RmsNorm.Forward(hidden.Slice(t * d, d), m.HNorm, cat.Slice(t * 2 * d + d, d), eps);
        }
        Span<float> x = s.X.AsSpan(0, n * d);
        m.EhProj.Forward(cat, x, n);
        PrepareRope(slices, s);
        Block(m.Block, _mtpAttention[k], c.NLayers + k, x, n, slices, k, s, mode, observer: null);
        foreach (SequenceSlice slice in slices) slice.Cache.Commit(slice.Count);
        Span<float> normed = s.Out.AsSpan(0, n * d);
        RmsNorm.Forward(x, m.HeadNorm, normed, eps); // every row: cheap beside the head, which reads only the rows asked for
        Head(m.Head, normed, slices, s, logits);
    }

    /// <summary>cos/sin of every row's position, and the positions themselves.</summary>
    private void PrepareRope(ReadOnlySpan<SequenceSlice> slices, RunState s)
    {
        int half = c.QkRopeHeadDim / 2;
        foreach (SequenceSlice slice in slices)
            for (int t = 0; t < slice.Count; t++)
            {
                int row = slice.Start + t, position = slice.Cache.Length + t;
                s.Positions[row] = position;
                _rope.CosSin(position, s.Cos.AsSpan(row * half, half), s.Sin.AsSpan(row * half, half));
            }
    }

    /// <summary>x += attn(attn_norm(x)); x += ffn(ffn_norm(x)).</summary>
    /// <param name="x">[n, dim] the residual stream</param>
    /// <param name="cacheLayer">which layer of each slice's cache this block reads and writes</param>
    private void Block(BlockWeights b, Mla attention, int layer, Span<float> x, int n, ReadOnlySpan<SequenceSlice> slices, int cacheLayer,
        RunState s, AttentionMode mode, IActivationObserver? observer)
    {
        int d = c.Dim;
        float eps = (float)c.RmsNormEps;
        Span<float> xb = s.Xb.AsSpan(0, n * d), o = s.Out.AsSpan(0, n * d); // [n, dim] each
        RmsNorm.Forward(x, b.AttnNorm, xb, eps);
        observer?.OnTensor(TensorName.AttnNorm, layer, xb, n, d);
        attention.Forward(xb, n, slices, cacheLayer, s, mode, observer, layer, o);
        observer?.OnTensor(TensorName.AttnOut, layer, o, n, d);
        TensorPrimitives.Add(x, o, x);
        observer?.OnTensor(TensorName.FfnInp, layer, x, n, d);
        RmsNorm.Forward(x, b.FfnNorm, xb, eps);
        observer?.OnTensor(TensorName.FfnNorm, layer, xb, n, d);
        switch (b.Ffn)
        {
            case MoeWeights moe: FeedForward.Moe(c, moe, xb, n, layer, s, observer, o); break;
            case MlpWeights mlp: FeedForward.Mlp(c, mlp, xb, n, s, o); break;
        }
        observer?.OnTensor(TensorName.FfnOut, layer, o, n, d);
        TensorPrimitives.Add(x, o, x);
        observer?.OnTensor(TensorName.LOut, layer, x, n, d);
    }
}
