namespace DeepSeekSharp.Model;

/// <summary>How router scores are made from router logits.</summary>
public enum ScoreFunc { Softmax, Sigmoid }

/// <summary>How experts are chosen from the scores (HF <c>topk_method</c>).</summary>
public enum TopkMethod
{
    /// <summary>Top-k of the scores over all experts.</summary>
    Greedy,
    /// <summary>Keep the <c>topk_group</c> groups with the largest max score, then top-k inside them (V2).</summary>
    GroupLimitedGreedy,
    /// <summary>Scores plus <c>e_score_correction_bias</c> choose; groups ranked by the sum of their two best
    /// biased scores; weights are the unbiased scores (V3).</summary>
    NoAuxTc,
}

/// <summary>YaRN rotary scaling (<c>rope_scaling</c> with type "yarn").</summary>
public sealed record YarnScaling(
    double Factor,
    int OriginalMaxPositionEmbeddings,
    double BetaFast,
    double BetaSlow,
    double Mscale,
    double MscaleAllDim);

/// <summary>Every hyper-parameter of a DeepSeek-V2/V3/R1 model, named after DeepSeek's reference
/// <c>ModelArgs</c>; the HF config.json field each comes from is in its remarks.</summary>
public sealed record ModelConfig
{
    /// <remarks>model_type: deepseek_v2 or deepseek_v3</remarks>
    public required string ModelType { get; init; }
    /// <remarks>vocab_size</remarks>
    public required int VocabSize { get; init; }
    /// <remarks>hidden_size</remarks>
    public required int Dim { get; init; }
    /// <remarks>intermediate_size: width of the dense SwiGLU MLP</remarks>
    public required int InterDim { get; init; }
    /// <remarks>moe_intermediate_size: width of one routed expert</remarks>
    public int MoeInterDim { get; init; }
    /// <remarks>num_hidden_layers (without MTP layers)</remarks>
    public required int NLayers { get; init; }
    /// <remarks>first_k_dense_replace</remarks>
    public int NDenseLayers { get; init; }
    /// <remarks>moe_layer_freq: layer i ≥ NDenseLayers is MoE when i % MoeLayerFreq == 0</remarks>
    public int MoeLayerFreq { get; init; } = 1;
    /// <remarks>num_attention_heads</remarks>
    public required int NHeads { get; init; }
    /// <remarks>n_routed_experts (0 = every layer dense)</remarks>
    public int NRoutedExperts { get; init; }
    /// <remarks>n_shared_experts</remarks>
    public int NSharedExperts { get; init; }
    /// <remarks>num_experts_per_tok</remarks>
    public int NActivatedExperts { get; init; }
    /// <remarks>n_group</remarks>
    public int NExpertGroups { get; init; } = 1;
    /// <remarks>topk_group</remarks>
    public int NLimitedGroups { get; init; } = 1;
    /// <remarks>topk_method</remarks>
    public TopkMethod TopkMethod { get; init; }
    /// <remarks>scoring_func</remarks>
    public ScoreFunc ScoreFunc { get; init; }
    /// <remarks>norm_topk_prob: renormalise the chosen weights to sum 1</remarks>
    public bool NormTopkProb { get; init; }
    /// <remarks>routed_scaling_factor</remarks>
    public double RouteScale { get; init; } = 1.0;
    /// <remarks>q_lora_rank; 0 when null (a single q_proj)</remarks>
    public int QLoraRank { get; init; }
    /// <remarks>kv_lora_rank</remarks>
    public required int KvLoraRank { get; init; }
    /// <remarks>qk_nope_head_dim</remarks>
    public required int QkNopeHeadDim { get; init; }
    /// <remarks>qk_rope_head_dim</remarks>
    public required int QkRopeHeadDim { get; init; }
    /// <remarks>v_head_dim</remarks>
    public required int VHeadDim { get; init; }
    /// <remarks>rope_theta</remarks>
    public double RopeTheta { get; init; } = 10000;
    /// <remarks>rope_scaling (null = plain RoPE)</remarks>
    public YarnScaling? Yarn { get; init; }
    /// <remarks>max_position_embeddings</remarks>
    public int MaxPositionEmbeddings { get; init; } = 4096;
    /// <remarks>rms_norm_eps</remarks>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <remarks>num_nextn_predict_layers</remarks>
    public int NMtpLayers { get; init; }
    /// <remarks>tie_word_embeddings</remarks>
    public bool TieWordEmbeddings { get; init; }
    /// <remarks>bos_token_id</remarks>
    public int? BosTokenId { get; init; }
    /// <remarks>eos_token_id</remarks>
    public int? EosTokenId { get; init; }
    /// <remarks>quantization_config.weight_block_size when quant_method is fp8; null otherwise</remarks>
    public (int Rows, int Cols)? Fp8BlockSize { get; init; }
    /// <remarks>torch_dtype, informational</remarks>
    public string? TorchDtype { get; init; }

    /// <summary>The router has <c>e_score_correction_bias</c> (exactly when topk_method is noaux_tc).</summary>
    public bool HasRouterBias => TopkMethod == TopkMethod.NoAuxTc;
    public bool HasQLora => QLoraRank > 0;
    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;
    /// <summary>Values cached per token per layer: the latent and the rotary key.</summary>
    public int LatentCacheWidth => KvLoraRank + QkRopeHeadDim;
    public bool IsMoeLayer(int layer) => NRoutedExperts > 0 && layer >= NDenseLayers && layer % MoeLayerFreq == 0;

    /// <summary>Softmax scale: (qk_nope + qk_rope)^-0.5, times mscale² under YaRN.</summary>
    public double SoftmaxScale
    {
        get
        {
            double scale = 1.0 / Math.Sqrt(QkHeadDim);
            if (Yarn is { MscaleAllDim: > 0 } y)
            {
                double m = YarnMscale(y.Factor, y.MscaleAllDim);
                scale *= m * m;
            }
            return scale;
        }
    }

    /// <summary>yarn_get_mscale: 0.1 · mscale · ln(factor) + 1 (1 when factor ≤ 1).</summary>
    public static double YarnMscale(double factor, double mscale) => factor <= 1 ? 1.0 : 0.1 * mscale * Math.Log(factor) + 1.0;

    /// <summary>Checks the invariants the forward pass relies on; throws naming the config.json field.</summary>
    public void Validate()
    {
        if (ModelType is not ("deepseek_v2" or "deepseek_v3"))
            throw new NotSupportedException($"config.json: model_type '{ModelType}' is not supported; supported: deepseek_v2, deepseek_v3");
        Positive("vocab_size", VocabSize);
        Positive("hidden_size", Dim);
        Positive("num_hidden_layers", NLayers);
        Positive("num_attention_heads", NHeads);
        Positive("kv_lora_rank", KvLoraRank);
        Positive("qk_nope_head_dim", QkNopeHeadDim);
        Positive("qk_rope_head_dim", QkRopeHeadDim);
        Positive("v_head_dim", VHeadDim);
        NonNegative("q_lora_rank", QLoraRank);
        NonNegative("num_nextn_predict_layers", NMtpLayers);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        Positive("moe_layer_freq", MoeLayerFreq);
        if (QkRopeHeadDim % 2 != 0)
            Fail($"qk_rope_head_dim ({QkRopeHeadDim}) must be even: rotary pairs are (x[2i], x[2i+1])");
        if (NDenseLayers < 0 || NDenseLayers > NLayers)
            Fail($"first_k_dense_replace ({NDenseLayers}) must be in [0, num_hidden_layers = {NLayers}]");
        if (!(RmsNormEps > 0)) Fail($"rms_norm_eps ({RmsNormEps}) must be > 0");
        if (!(RopeTheta > 1)) Fail($"rope_theta ({RopeTheta}) must be > 1");
        bool anyDense = Enumerable.Range(0, NLayers).Any(l => !IsMoeLayer(l));
        if (anyDense) Positive("intermediate_size", InterDim);
        NonNegative("n_routed_experts", NRoutedExperts);
        if (NRoutedExperts > 0) ValidateMoe();
        if (Yarn is { } y)
        {
            if (!(y.Factor > 0)) Fail($"rope_scaling.factor ({y.Factor}) must be > 0");
            Positive("rope_scaling.original_max_position_embeddings", y.OriginalMaxPositionEmbeddings);
            if (!(y.BetaFast > 0) || !(y.BetaSlow > 0)) Fail($"rope_scaling.beta_fast ({y.BetaFast}) and beta_slow ({y.BetaSlow}) must be > 0");
        }
        if (Fp8BlockSize is { } b && (b.Rows <= 0 || b.Cols <= 0))
            Fail($"quantization_config.weight_block_size [{b.Rows}, {b.Cols}] must be positive");
    }

    private void ValidateMoe()
    {
        Positive("moe_intermediate_size", MoeInterDim);
        NonNegative("n_shared_experts", NSharedExperts);
        if (NActivatedExperts < 1 || NActivatedExperts > NRoutedExperts)
            Fail($"num_experts_per_tok ({NActivatedExperts}) must be in [1, n_routed_experts = {NRoutedExperts}]");
        Positive("n_group", NExpertGroups);
        if (NRoutedExperts % NExpertGroups != 0)
            Fail($"n_group ({NExpertGroups}) must divide n_routed_experts ({NRoutedExperts})");
        if (TopkMethod != TopkMethod.Greedy)
        {
            if (NLimitedGroups < 1 || NLimitedGroups > NExpertGroups)
                Fail($"topk_group ({NLimitedGroups}) must be in [1, n_group = {NExpertGroups}]");
            int perGroup = NRoutedExperts / NExpertGroups;
            if (NActivatedExperts > NLimitedGroups * perGroup)
                Fail($"num_experts_per_tok ({NActivatedExperts}) exceeds the {NLimitedGroups * perGroup} experts in topk_group ({NLimitedGroups}) groups of {perGroup}");
            if (TopkMethod == TopkMethod.NoAuxTc && NExpertGroups > 1 && perGroup < 2)
                Fail($"topk_method noaux_tc ranks groups by their two best experts, but n_group ({NExpertGroups}) leaves {perGroup} expert per group");
        }
        if (!(RouteScale > 0)) Fail($"routed_scaling_factor ({RouteScale}) must be > 0");
    }

    private static void Positive(string field, int value)
    {
        if (value <= 0) Fail($"{field} ({value}) must be > 0");
    }

    private static void NonNegative(string field, int value)
    {
        if (value < 0) Fail($"{field} ({value}) must be ≥ 0");
    }

    private static void Fail(string message) => throw new InvalidDataException("config.json: " + message);
}
