using DeepSeekSharp.Linear;
using DeepSeekSharp.Formats.SafeTensors;

namespace DeepSeekSharp.Model;

/// <summary>Architecture facts derived from a config alone (no weights needed): parameter counts, active
/// parameters per token, and latent-cache size against ordinary multi-head attention.</summary>
public sealed record ModelSummary
{
    public required ModelConfig Config { get; init; }
    /// <summary>Parameters of the main model (embedding, blocks, final norm, lm_head), without MTP modules.</summary>
    public required long TotalParameters { get; init; }
    /// <summary>Parameters one token uses: everything except the routed experts it was not sent to
    /// (all non-expert weights incl. embedding and lm_head, shared experts, num_experts_per_tok routed experts).</summary>
    public required long ActiveParameters { get; init; }
    /// <summary>Parameters of the MTP modules as stored (incl. their embed_tokens and shared_head copies).</summary>
    public required long MtpParameters { get; init; }
    public int DenseLayers { get; init; }
    public int MoeLayers { get; init; }
    /// <summary>Values the latent cache holds per token per layer: kv_lora_rank + qk_rope_head_dim.</summary>
    public int LatentValuesPerTokenPerLayer => Config.LatentCacheWidth;
    /// <summary>Values ordinary MHA caches per token per layer: per head a key (qk_nope + qk_rope) and a value
    /// (v_head_dim) — what model.py's naive path stores.</summary>
    public int MhaValuesPerTokenPerLayer => Config.NHeads * (Config.QkHeadDim + Config.VHeadDim);
    /// <summary>Latent cache bytes per token over all layers, float32 as this engine stores it.</summary>
    public long LatentBytesPerToken => (long)Config.NLayers * LatentValuesPerTokenPerLayer * sizeof(float);
    public long MhaBytesPerToken => (long)Config.NLayers * MhaValuesPerTokenPerLayer * sizeof(float);
    /// <summary>Storage dtypes of the checkpoint's tensors with counts; empty when only a config is present.</summary>
    public IReadOnlyDictionary<string, int> WeightDTypes { get; init; } = new Dictionary<string, int>();

    public string RoutingDescription
    {
        get
        {
            ModelConfig c = Config;
            if (c.NRoutedExperts == 0) return "none (all layers dense)";
            string method = c.TopkMethod switch
            {
                TopkMethod.Greedy => "greedy",
                TopkMethod.GroupLimitedGreedy => $"group_limited_greedy ({c.NExpertGroups} groups, keep {c.NLimitedGroups} by max score)",
                _ => $"noaux_tc (e_score_correction_bias for selection; {c.NExpertGroups} groups, keep {c.NLimitedGroups} by top-2 sum)",
            };
            return $"{c.ScoreFunc.ToString().ToLowerInvariant()} scores, {method}, top-{c.NActivatedExperts} of {c.NRoutedExperts}, " +
                   $"norm_topk_prob {c.NormTopkProb.ToString().ToLowerInvariant()}, routed_scaling_factor {c.RouteScale}";
        }
    }

    public static ModelSummary FromConfig(ModelConfig c, IReadOnlyDictionary<string, int>? dtypes = null)
    {
        long d = c.Dim;
        long attention = (c.HasQLora ? d * c.QLoraRank + c.QLoraRank + (long)c.QLoraRank * c.NHeads * c.QkHeadDim : d * c.NHeads * c.QkHeadDim)
            + d * c.LatentCacheWidth + c.KvLoraRank + (long)c.KvLoraRank * c.NHeads * (c.QkNopeHeadDim + c.VHeadDim)
            + (long)c.NHeads * c.VHeadDim * d;
        long norms = 2 * d;
        long dense = 3 * d * c.InterDim;
        long expert = 3 * d * c.MoeInterDim;
        long router = (long)c.NRoutedExperts * d + (c.HasRouterBias ? c.NRoutedExperts : 0);
        long shared = c.NSharedExperts * expert;
        long moeTotal = router + c.NRoutedExperts * expert + shared;
        long moeActive = router + c.NActivatedExperts * expert + shared;
        long embed = (long)c.VocabSize * d, head = c.TieWordEmbeddings ? 0 : embed;

        long total = embed + d + head, active = embed + d + head;
        int moeLayers = 0;
        for (int l = 0; l < c.NLayers; l++)
        {
            bool moe = c.IsMoeLayer(l);
            moeLayers += moe ? 1 : 0;
            total += attention + norms + (moe ? moeTotal : dense);
            active += attention + norms + (moe ? moeActive : dense);
        }
        long mtpBlock = attention + norms + (c.NRoutedExperts > 0 ? moeTotal : dense);
        long mtp = c.NMtpLayers * (2 * d + 2 * d * d + mtpBlock + d + 2 * (long)c.VocabSize * d);
        return new ModelSummary
        {
            Config = c,
            TotalParameters = total,
            ActiveParameters = active,
            MtpParameters = mtp,
            DenseLayers = c.NLayers - moeLayers,
            MoeLayers = moeLayers,
            WeightDTypes = dtypes ?? new Dictionary<string, int>(),
        };
    }

    /// <summary>Summary of a model folder: config.json plus, when present, the dtypes in the safetensors headers
    /// (no weights are read).</summary>
    public static ModelSummary FromDirectory(string directory)
    {
        if (Formats.Gguf.GgufFile.IsGguf(directory) && File.Exists(directory))
        {
            using var gguf = Formats.Gguf.GgufCheckpoint.Open(directory);
            var types = new SortedDictionary<string, int>(StringComparer.Ordinal);
            foreach (var t in gguf.Tensors.Values)
            {
                string key = Kernels.Quant.GgmlBlocks.Name(t.Type);
                types[key] = types.GetValueOrDefault(key) + 1;
            }
            return FromConfig(Formats.Gguf.Deepseek2Gguf.ReadConfig(gguf), types);
        }
        ModelConfig c = Formats.HfConfig.Load(directory);
        if (!SafeTensorsCheckpoint.Exists(directory)) return FromConfig(c);
        using SafeTensorsCheckpoint ckpt = SafeTensorsCheckpoint.Open(directory);
        var dtypes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (string name in ckpt.TensorNames)
        {
            string key = ckpt.TryGet(name)!.Value.Info.Format.SafeTensorsName();
            dtypes[key] = dtypes.GetValueOrDefault(key) + 1;
        }
        return FromConfig(c, dtypes);
    }
}
