using N = DeepSeekSharp.Formats.TensorNames.Hf;

namespace DeepSeekSharp.Model;

/// <summary>What a tensor is, for choosing a random initial scale.</summary>
public enum TensorRole { Embedding, Linear, Norm, Router, RouterBias, /** an FP8 weight's block scales (weight_scale_inv) */ Fp8Scale }

/// <summary>Every tensor a checkpoint of a config holds, in the order a Hugging Face checkpoint stores them, with
/// Hugging Face names and [out, in] shapes — what <see cref="WeightLoader"/> reads.</summary>
public static class TensorManifest
{
    public readonly record struct Entry(string Name, long[] Shape, TensorRole Role, int Layer);

    public static IEnumerable<Entry> For(ModelConfig c)
    {
        yield return new(N.Embed, [c.VocabSize, c.Dim], TensorRole.Embedding, -1);
        for (int l = 0; l < c.NLayers; l++)
            foreach (Entry e in Block(c, l, c.IsMoeLayer(l))) yield return e;
        yield return new(N.Norm, [c.Dim], TensorRole.Norm, c.NLayers);
        if (!c.TieWordEmbeddings) yield return new(N.Head, [c.VocabSize, c.Dim], TensorRole.Linear, c.NLayers);
        for (int k = 0; k < c.NMtpLayers; k++)
        {
            int l = c.NLayers + k;
            yield return new(N.Layer(l, N.MtpEmbed), [c.VocabSize, c.Dim], TensorRole.Embedding, l);
            yield return new(N.Layer(l, N.MtpENorm), [c.Dim], TensorRole.Norm, l);
            yield return new(N.Layer(l, N.MtpHNorm), [c.Dim], TensorRole.Norm, l);
            yield return new(N.Layer(l, N.MtpEhProj), [c.Dim, 2 * c.Dim], TensorRole.Linear, l);
            foreach (Entry e in Block(c, l, c.NRoutedExperts > 0)) yield return e;
            yield return new(N.Layer(l, N.MtpHeadNorm), [c.Dim], TensorRole.Norm, l);
            yield return new(N.Layer(l, N.MtpHead), [c.VocabSize, c.Dim], TensorRole.Linear, l);
        }
    }

    private static IEnumerable<Entry> Block(ModelConfig c, int l, bool moe)
    {
        Entry Lin(string suffix, long rows, long cols) => new(N.Layer(l, suffix), [rows, cols], TensorRole.Linear, l);
        int qOut = c.NHeads * c.QkHeadDim;
        yield return new(N.Layer(l, N.AttnNorm), [c.Dim], TensorRole.Norm, l);
        if (c.HasQLora)
        {
            yield return Lin(N.WqA, c.QLoraRank, c.Dim);
            yield return new(N.Layer(l, N.QNorm), [c.QLoraRank], TensorRole.Norm, l);
            yield return Lin(N.WqB, qOut, c.QLoraRank);
        }
        else yield return Lin(N.Wq, qOut, c.Dim);
        yield return Lin(N.WkvA, c.LatentCacheWidth, c.Dim);
        yield return new(N.Layer(l, N.KvNorm), [c.KvLoraRank], TensorRole.Norm, l);
        yield return Lin(N.WkvB, c.NHeads * (c.QkNopeHeadDim + c.VHeadDim), c.KvLoraRank);
        yield return Lin(N.Wo, c.Dim, c.NHeads * c.VHeadDim);
        yield return new(N.Layer(l, N.FfnNorm), [c.Dim], TensorRole.Norm, l);
        IEnumerable<Entry> Mlp(string prefix, int inter) =>
            [Lin(prefix + N.Gate, inter, c.Dim), Lin(prefix + N.Up, inter, c.Dim), Lin(prefix + N.Down, c.Dim, inter)];
        if (!moe)
        {
            foreach (Entry e in Mlp(N.DenseMlp, c.InterDim)) yield return e;
            yield break;
        }
        yield return new(N.Layer(l, N.Router), [c.NRoutedExperts, c.Dim], TensorRole.Router, l);
        if (c.HasRouterBias) yield return new(N.Layer(l, N.RouterBias), [c.NRoutedExperts], TensorRole.RouterBias, l);
        for (int e = 0; e < c.NRoutedExperts; e++)
            foreach (Entry x in Mlp(N.Expert(e), c.MoeInterDim)) yield return x;
        if (c.NSharedExperts > 0)
            foreach (Entry x in Mlp(N.SharedExperts, c.NSharedExperts * c.MoeInterDim)) yield return x;
    }
}
