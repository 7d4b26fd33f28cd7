using DeepSeekSharp.Linear;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;
using N = DeepSeekSharp.Formats.TensorNames.Hf;

namespace DeepSeekSharp.Model;

/// <summary>Declares every tensor a model needs with its expected shape (as llama.cpp's create_tensor does) and
/// reads it: each weight matrix in the format <see cref="LoadOptions"/> chooses for it, norms and biases as float32.</summary>
internal sealed class WeightLoader(ModelConfig c, ITensorSource r, LoadOptions options)
{
    private int _done;
    private readonly int _total = TensorManifest.For(c).Count(e => e.Role is TensorRole.Linear or TensorRole.Embedding or TensorRole.Router);

    /// <summary>Reads one weight matrix in the format the options choose for it.</summary>
    private Matrix Mat(string name, int rows, int cols, string why, bool quantizable = true)
    {
        Matrix m = r.ReadMatrix(name, rows, cols, why, options.FormatFor(r.StoredFormat(name), cols, quantizable), options.MemoryMap);
        options.Progress?.Report((++_done, _total));
        return m;
    }

    public ModelWeights Load()
    {
        Matrix embed = Mat(N.Embed, c.VocabSize, c.Dim, $"vocab_size {c.VocabSize} x hidden_size {c.Dim}");
        var blocks = new BlockWeights[c.NLayers];
        for (int l = 0; l < c.NLayers; l++) blocks[l] = Block(l, c.IsMoeLayer(l));
        float[] norm = Vector(N.Norm, c.Dim);
        Matrix head = c.TieWordEmbeddings && !r.Contains(N.Head)
            ? embed
            : Mat(N.Head, c.VocabSize, c.Dim, $"vocab_size {c.VocabSize} x hidden_size {c.Dim}");
        var mtp = new List<MtpWeights>();
        for (int k = 0; k < c.NMtpLayers; k++)
        {
            int layer = c.NLayers + k;
            if (!r.Contains(N.Layer(layer, N.MtpEhProj))) break; // a checkpoint without MTP weights loads without MTP
            mtp.Add(Mtp(layer, embed, head));
        }
        return new ModelWeights { Embed = embed, Blocks = blocks, Norm = norm, Head = head, Mtp = [.. mtp], DTypes = r.DTypesRead };
    }

    private float[] Vector(string name, int length) => r.ReadVector(name, length, $"{length} from config.json");

    private BlockWeights Block(int l, bool moe) => new()
    {
        AttnNorm = r.ReadVector(N.Layer(l, N.AttnNorm), c.Dim, $"hidden_size {c.Dim}"),
        Attn = Attention(l),
        FfnNorm = r.ReadVector(N.Layer(l, N.FfnNorm), c.Dim, $"hidden_size {c.Dim}"),
        Ffn = moe ? Moe(l) : Mlp(l, N.DenseMlp, c.InterDim, $"intermediate_size {c.InterDim}"),
    };

    private AttentionWeights Attention(int l)
    {
        Matrix wkvB = Mat(N.Layer(l, N.WkvB), c.NHeads * (c.QkNopeHeadDim + c.VHeadDim), c.KvLoraRank,
            $"num_attention_heads {c.NHeads} x (qk_nope_head_dim {c.QkNopeHeadDim} + v_head_dim {c.VHeadDim}), x kv_lora_rank {c.KvLoraRank}");
        int qOut = c.NHeads * c.QkHeadDim;
        string wkT = N.Layer(l, N.WkT);
        string qWhy = $"num_attention_heads {c.NHeads} x (qk_nope_head_dim {c.QkNopeHeadDim} + qk_rope_head_dim {c.QkRopeHeadDim})";
        return new AttentionWeights
        {
            Q = c.HasQLora
                ? new QProjection.LowRank(
                    Mat(N.Layer(l, N.WqA), c.QLoraRank, c.Dim, $"q_lora_rank {c.QLoraRank} x hidden_size {c.Dim}"),
                    r.ReadVector(N.Layer(l, N.QNorm), c.QLoraRank, $"q_lora_rank {c.QLoraRank}"),
                    Mat(N.Layer(l, N.WqB), qOut, c.QLoraRank, qWhy + $" x q_lora_rank {c.QLoraRank}"))
                : new QProjection.Plain(Mat(N.Layer(l, N.Wq), qOut, c.Dim, qWhy + $" x hidden_size {c.Dim}")),
            WkvA = Mat(N.Layer(l, N.WkvA), c.LatentCacheWidth, c.Dim,
                $"kv_lora_rank {c.KvLoraRank} + qk_rope_head_dim {c.QkRopeHeadDim} from config.json, x hidden_size {c.Dim}"),
            KvNorm = r.ReadVector(N.Layer(l, N.KvNorm), c.KvLoraRank, $"kv_lora_rank {c.KvLoraRank}"),
            WkvB = wkvB,
            WkT = r.Contains(wkT)
                ? r.ReadMatrix(wkT, c.NHeads * c.KvLoraRank, c.QkNopeHeadDim,
                    $"num_attention_heads {c.NHeads} x kv_lora_rank {c.KvLoraRank}, x qk_nope_head_dim {c.QkNopeHeadDim}",
                    options.FormatFor(r.StoredFormat(wkT), c.QkNopeHeadDim, quantizable: true), options.MemoryMap)
                : TransposeKNope(wkvB),
            Wo = Mat(N.Layer(l, N.Wo), c.Dim, c.NHeads * c.VHeadDim,
                $"hidden_size {c.Dim} x num_attention_heads {c.NHeads} * v_head_dim {c.VHeadDim}"),
        };
    }

    /// <summary>W_UK of every head, transposed: row h·rank + c holds kv_b_proj[h·(nope+v) + d, c] over d.</summary>
    private Matrix TransposeKNope(Matrix wkvB)
    {
        int nope = c.QkNopeHeadDim, rank = c.KvLoraRank, headRows = nope + c.VHeadDim;
        // FP8 (V3/R1 as shipped), whatever layout kv_b_proj is kept in: the codes and block scales transposed, the same
        // values at a byte a weight.
        if (wkvB is WidenedMatrix<Fp8Codes> fp8 && fp8.TransposeHeadParts(c.NHeads, headRows, nope) is { } transposedFp8) return transposedFp8;
        // Same format as kv_b_proj where it can be written; exact F32 for F32/FP8 sources; else Q8_0, else F32.
        WeightFormat format = wkvB.Format is WeightFormat.F32 or WeightFormat.FP8 ? WeightFormat.F32
            : wkvB.Format.Traits().CanHold(nope) ? wkvB.Format
            : WeightFormat.Q8_0.Traits().CanHold(nope) ? WeightFormat.Q8_0 : WeightFormat.F32;
        Matrix t = Matrix.Create(format, c.NHeads * rank, nope);
        var head = new float[nope * rank];       // [nope, rank]: the head's k_nope rows of kv_b_proj
        var transposed = new float[rank * nope]; // [rank, nope]
        for (int h = 0; h < c.NHeads; h++)
        {
            for (int d = 0; d < nope; d++) wkvB.DequantizeRow(h * headRows + d, head.AsSpan(d * rank, rank));
            Kernels.Transpose.Compute(head, nope, rank, transposed);
            for (int cc = 0; cc < rank; cc++) t.SetRow(h * rank + cc, transposed.AsSpan(cc * nope, nope));
        }
        return t;
    }

    private MlpWeights Mlp(int l, string prefix, int inter, string why) => new()
    {
        Gate = Mat(N.Layer(l, prefix + N.Gate), inter, c.Dim, $"{why} x hidden_size {c.Dim}"),
        Up = Mat(N.Layer(l, prefix + N.Up), inter, c.Dim, $"{why} x hidden_size {c.Dim}"),
        Down = Mat(N.Layer(l, prefix + N.Down), c.Dim, inter, $"hidden_size {c.Dim} x {why}"),
    };

    private MoeWeights Moe(int l)
    {
        var experts = new MlpWeights[c.NRoutedExperts];
        for (int e = 0; e < experts.Length; e++)
            experts[e] = Mlp(l, N.Expert(e), c.MoeInterDim, $"moe_intermediate_size {c.MoeInterDim}");
        int sharedInter = c.NSharedExperts * c.MoeInterDim;
        return new MoeWeights
        {
            Router = Mat(N.Layer(l, N.Router), c.NRoutedExperts, c.Dim, $"n_routed_experts {c.NRoutedExperts} x hidden_size {c.Dim}", quantizable: false),
            RouterBias = c.HasRouterBias ? r.ReadVector(N.Layer(l, N.RouterBias), c.NRoutedExperts, $"n_routed_experts {c.NRoutedExperts}; topk_method noaux_tc") : null,
            Experts = experts,
            Shared = sharedInter > 0
                ? Mlp(l, N.SharedExperts, sharedInter, $"n_shared_experts {c.NSharedExperts} * moe_intermediate_size {c.MoeInterDim}")
                : null,
        };
    }

    private MtpWeights Mtp(int layer, Matrix mainEmbed, Matrix mainHead) => new()
    {
        ENorm = r.ReadVector(N.Layer(layer, N.MtpENorm), c.Dim, $"hidden_size {c.Dim}"),
        HNorm = r.ReadVector(N.Layer(layer, N.MtpHNorm), c.Dim, $"hidden_size {c.Dim}"),
        EhProj = Mat(N.Layer(layer, N.MtpEhProj), c.Dim, 2 * c.Dim, $"hidden_size {c.Dim} x 2 * hidden_size"),
        Embed = r.Contains(N.Layer(layer, N.MtpEmbed))
            ? Mat(N.Layer(layer, N.MtpEmbed), c.VocabSize, c.Dim, $"vocab_size {c.VocabSize} x hidden_size {c.Dim}")
            : mainEmbed,
        Block = Block(layer, c.NRoutedExperts > 0),
        HeadNorm = r.ReadVector(N.Layer(layer, N.MtpHeadNorm), c.Dim, $"hidden_size {c.Dim}"),
        Head = r.Contains(N.Layer(layer, N.MtpHead))
            ? Mat(N.Layer(layer, N.MtpHead), c.VocabSize, c.Dim, $"vocab_size {c.VocabSize} x hidden_size {c.Dim}")
            : mainHead,
    };
}
