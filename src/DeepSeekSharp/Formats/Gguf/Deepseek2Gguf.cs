using DeepSeekSharp.Model;
using K = DeepSeekSharp.Formats.TensorNames.GgufKeys;
using G = DeepSeekSharp.Formats.TensorNames.Gguf;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>The <c>deepseek2</c> hyper-parameters as llama.cpp's converter writes them (convert_hf_to_gguf.py,
/// DeepseekV2Model.set_gguf_parameters) and reads them (llama-model.cpp), mapped to and from
/// <see cref="ModelConfig"/>.
/// <para>What GGUF does not store is inferred the way llama.cpp behaves: topk_method is noaux_tc when the router has
/// <c>exp_probs_b</c>, group_limited_greedy when there are several expert groups, greedy otherwise; a missing
/// <c>expert_gating_func</c> means softmax (V2 files predate the key); YaRN's mscale and mscale_all_dim are both
/// <c>yarn_log_multiplier</c> / 0.1 (the converter writes 0.1 · mscale_all_dim; every release has mscale equal to
/// mscale_all_dim). MTP layers are not converted, as in llama.cpp.</para></summary>
public static class Deepseek2Gguf
{
    public const uint GatingSoftmax = 1, GatingSigmoid = 2;

    public static ModelConfig ReadConfig(GgufCheckpoint model)
    {
        GgufFile f = model.Main;
        IReadOnlyDictionary<string, GgufTensorInfo> tensors = model.Tensors;
        string arch = f.String(K.Architecture) ?? throw Missing(f, K.Architecture);
        if (arch != G.Arch)
            throw new NotSupportedException($"{f.FileName}: architecture '{arch}' is not supported; supported: {G.Arch} (DeepSeek-V2/V3/R1)");
        int Req(string key) => Int(f, K.Arch(key)) ?? throw Missing(f, K.Arch(key));
        int? Opt(string key) => Int(f, K.Arch(key));

        int rope = Req(K.RopeDimensionCount);
        int nope, v;
        if (Opt(K.KeyLengthMla) is { } kMla)
        {
            nope = kMla - rope;
            v = Opt(K.ValueLengthMla) ?? throw Missing(f, K.Arch(K.ValueLengthMla));
        }
        else
        {
            // older files: key_length = qk_nope + qk_rope, value_length = v_head_dim
            nope = Req(K.KeyLength) - rope;
            v = Req(K.ValueLength);
        }
        int nRouted = Opt(K.ExpertCount) ?? 0;
        int nDense = Opt(K.LeadingDenseBlockCount) ?? 0;
        int nGroup = Opt(K.ExpertGroupCount) ?? 1;
        uint gating = (uint)(Opt(K.ExpertGatingFunc) ?? (int)GatingSoftmax);
        if (gating is not (GatingSoftmax or GatingSigmoid))
            throw new NotSupportedException($"{f.FileName}: metadata '{K.Arch(K.ExpertGatingFunc)}' = {gating} is not supported; supported: 1 (softmax), 2 (sigmoid)");
        bool hasBias = nRouted > 0 && tensors.ContainsKey(G.Block(nDense, G.ExpProbsB));
        TopkMethod topk = hasBias ? TopkMethod.NoAuxTc : nGroup > 1 ? TopkMethod.GroupLimitedGreedy : TopkMethod.Greedy;
        YarnScaling? yarn = null;
        string? scaling = f.String(K.Arch(K.RopeScalingType));
        if (scaling is not (null or "none"))
        {
            if (scaling != "yarn") throw new NotSupportedException($"{f.FileName}: metadata '{K.Arch(K.RopeScalingType)}' = '{scaling}' is not supported; supported: yarn, none");
            double mscale = (f.Number(K.Arch(K.RopeYarnLogMul)) ?? 0) / 0.1;
            yarn = new YarnScaling(
                Factor: f.Number(K.Arch(K.RopeScalingFactor)) ?? throw Missing(f, K.Arch(K.RopeScalingFactor)),
                OriginalMaxPositionEmbeddings: Req(K.RopeScalingOrigCtx),
                BetaFast: f.Number(K.Arch(K.RopeYarnBetaFast)) ?? 32,
                BetaSlow: f.Number(K.Arch(K.RopeYarnBetaSlow)) ?? 1,
                Mscale: mscale,
                MscaleAllDim: mscale);
        }
        int vocab = Opt(K.VocabSize) ?? (f.Array<string>(K.Tokens)?.Length)
            ?? (tensors.TryGetValue(G.TokenEmbd, out GgufTensorInfo? e) ? (int)e.Dims[^1] : throw Missing(f, K.Arch(K.VocabSize)));
        var config = new ModelConfig
        {
            ModelType = hasBias || gating == GatingSigmoid ? "deepseek_v3" : "deepseek_v2",
            VocabSize = vocab,
            Dim = Req(K.EmbeddingLength),
            InterDim = Opt(K.FeedForwardLength) ?? 0,
            MoeInterDim = nRouted > 0 ? Req(K.ExpertFeedForwardLength) : 0,
            NLayers = Req(K.BlockCount),
            NDenseLayers = nRouted > 0 ? nDense : 0,
            NHeads = Req(K.HeadCount),
            NRoutedExperts = nRouted,
            NSharedExperts = Opt(K.ExpertSharedCount) ?? 0,
            NActivatedExperts = nRouted > 0 ? Req(K.ExpertUsedCount) : 0,
            NExpertGroups = nGroup,
            NLimitedGroups = Opt(K.ExpertGroupUsedCount) ?? 1,
            TopkMethod = topk,
            ScoreFunc = gating == GatingSigmoid ? ScoreFunc.Sigmoid : ScoreFunc.Softmax,
            NormTopkProb = f.Flag(K.Arch(K.ExpertWeightsNorm)) ?? false,
            RouteScale = f.Number(K.Arch(K.ExpertWeightsScale)) ?? 1.0,
            QLoraRank = Opt(K.QLoraRank) ?? 0,
            KvLoraRank = Req(K.KvLoraRank),
            QkNopeHeadDim = nope,
            QkRopeHeadDim = rope,
            VHeadDim = v,
            RopeTheta = f.Number(K.Arch(K.RopeFreqBase)) ?? 10000,
            Yarn = yarn,
            MaxPositionEmbeddings = Opt(K.ContextLength) ?? 4096,
            RmsNormEps = f.Number(K.Arch(K.RmsEps)) ?? 1e-6,
            TieWordEmbeddings = !tensors.ContainsKey(G.Output),
            BosTokenId = Int(f, K.BosId),
            EosTokenId = Int(f, K.EosId),
        };
        try { config.Validate(); }
        catch (InvalidDataException ex)
        {
            throw new InvalidDataException($"{f.FileName}: bad {G.Arch} hyper-parameters: {ex.Message.Replace("config.json: ", "")} (HF names; read from the {G.Arch}.* keys)", ex);
        }
        return config;
    }

    private static int? Int(GgufFile f, string key)
    {
        long? v = f.Integer(key);
        if (v is { } x && (x < int.MinValue || x > int.MaxValue))
            throw new InvalidDataException($"{f.FileName}: metadata '{key}' = {x} is out of range");
        return (int?)v;
    }

    private static InvalidDataException Missing(GgufFile f, string key) => new($"{f.FileName}: required metadata '{key}' is missing");

    /// <summary>The deepseek2 metadata of a config, key for key what llama.cpp's converter writes.</summary>
    public static List<KeyValuePair<string, GgufValue>> Metadata(ModelConfig c, string name, uint fileType)
    {
        var m = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue v) => m.Add(new(key, v));
        void U(string key, int v) => Add(K.Arch(key), GgufValue.U32((uint)v));
        void F(string key, double v) => Add(K.Arch(key), GgufValue.F32((float)v));
        Add(K.Architecture, GgufValue.Str(G.Arch));
        Add(K.Type, GgufValue.Str("model"));
        Add(K.Name, GgufValue.Str(name));
        U(K.BlockCount, c.NLayers);
        U(K.ContextLength, c.MaxPositionEmbeddings);
        U(K.EmbeddingLength, c.Dim);
        U(K.FeedForwardLength, c.InterDim);
        U(K.HeadCount, c.NHeads);
        U(K.HeadCountKv, 1); // MLA runs as MQA over the latent
        if (c.Yarn is { } y)
        {
            Add(K.Arch(K.RopeScalingType), GgufValue.Str("yarn"));
            F(K.RopeScalingFactor, y.Factor);
            U(K.RopeScalingOrigCtx, y.OriginalMaxPositionEmbeddings);
            F(K.RopeYarnBetaFast, y.BetaFast);
            F(K.RopeYarnBetaSlow, y.BetaSlow);
        }
        F(K.RopeFreqBase, c.RopeTheta);
        F(K.RmsEps, c.RmsNormEps);
        if (c.NRoutedExperts > 0)
        {
            U(K.ExpertUsedCount, c.NActivatedExperts);
            bool grouped = c.TopkMethod != TopkMethod.Greedy; // greedy ignores groups; reading back infers the method from them
            U(K.ExpertGroupCount, grouped ? c.NExpertGroups : 1);
            U(K.ExpertGroupUsedCount, grouped ? c.NLimitedGroups : 1);
            U(K.ExpertGatingFunc, (int)(c.ScoreFunc == ScoreFunc.Sigmoid ? GatingSigmoid : GatingSoftmax));
        }
        Add(K.FileType, GgufValue.U32(fileType));
        U(K.LeadingDenseBlockCount, c.NRoutedExperts > 0 ? c.NDenseLayers : c.NLayers);
        U(K.VocabSize, c.VocabSize);
        // llama.cpp reads q_lora_rank for every deepseek2 model whose layer count is not V2-Lite's (26 or 27), so a
        // model cut to other depths without q-LoRA carries it as 0 (its converter writes it only when set).
        if (c.HasQLora || c.NLayers is not (26 or 27)) U(K.QLoraRank, c.HasQLora ? c.QLoraRank : 0);
        U(K.KvLoraRank, c.KvLoraRank);
        U(K.KeyLength, c.KvLoraRank + c.QkRopeHeadDim);
        U(K.ValueLength, c.KvLoraRank);
        U(K.KeyLengthMla, c.QkNopeHeadDim + c.QkRopeHeadDim);
        U(K.ValueLengthMla, c.VHeadDim);
        U(K.ExpertFeedForwardLength, c.NRoutedExperts > 0 ? c.MoeInterDim : c.InterDim);
        if (c.NRoutedExperts > 0) U(K.ExpertCount, c.NRoutedExperts);
        U(K.ExpertSharedCount, c.NSharedExperts);
        F(K.ExpertWeightsScale, c.RouteScale);
        if (c.NormTopkProb) Add(K.Arch(K.ExpertWeightsNorm), GgufValue.Bool(true));
        U(K.RopeDimensionCount, c.QkRopeHeadDim);
        if (c.Yarn is { MscaleAllDim: > 0 } yy) F(K.RopeYarnLogMul, 0.1 * yy.MscaleAllDim);
        Add(K.QuantizationVersion, GgufValue.U32(2));
        return m;
    }
}
