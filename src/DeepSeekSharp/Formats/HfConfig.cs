using DeepSeekSharp.Linear;
using System.Text.Json;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Formats;

/// <summary>Reads a Hugging Face <c>config.json</c> of model_type deepseek_v2 or deepseek_v3 into a
/// <see cref="ModelConfig"/>. Defaults are those of the released configs' configuration classes
/// (DeepseekV2Config / DeepseekV3Config); shape fields have no default and must be present.</summary>
public static class HfConfig
{
    public const string FileName = "config.json";

    public static ModelConfig Load(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{directory}: no {FileName}; a Hugging Face model folder needs one", path);
        return Parse(File.ReadAllText(path));
    }

    /// <summary>Parses config.json text. Anything malformed — not JSON, a member of the wrong type, an impossible
    /// value — is an <see cref="InvalidDataException"/> naming the file; an unsupported architecture or setting a
    /// <see cref="NotSupportedException"/>.</summary>
    public static ModelConfig Parse(string json) => JsonShape.Read(FileName, () => ParseCore(json));

    private static ModelConfig ParseCore(string json)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new InvalidDataException($"{FileName}: not valid JSON: {e.Message}", e); }
        using (doc)
        {
            JsonElement r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{FileName}: must be a JSON object");
            string modelType = Str(r, "model_type") ?? throw Missing("model_type");
            if (modelType is not ("deepseek_v2" or "deepseek_v3"))
                throw new NotSupportedException($"{FileName}: model_type '{modelType}' is not supported; supported: deepseek_v2, deepseek_v3");
            bool v3 = modelType == "deepseek_v3";

            string act = Str(r, "hidden_act") ?? "silu";
            if (act != "silu") throw new NotSupportedException($"{FileName}: hidden_act '{act}' is not supported; supported: silu");
            if (Bool(r, "attention_bias") == true) throw new NotSupportedException($"{FileName}: attention_bias true is not supported (no DeepSeek release uses it)");

            int nRouted = Int(r, "n_routed_experts") ?? 0;
            string topk = Str(r, "topk_method") ?? (v3 ? "noaux_tc" : "greedy");
            string scoring = Str(r, "scoring_func") ?? (v3 ? "sigmoid" : "softmax");
            var config = new ModelConfig
            {
                ModelType = modelType,
                VocabSize = Required(r, "vocab_size"),
                Dim = Required(r, "hidden_size"),
                InterDim = Required(r, "intermediate_size"),
                MoeInterDim = nRouted > 0 ? Required(r, "moe_intermediate_size") : Int(r, "moe_intermediate_size") ?? 0,
                NLayers = Required(r, "num_hidden_layers"),
                NDenseLayers = Int(r, "first_k_dense_replace") ?? 0,
                MoeLayerFreq = Int(r, "moe_layer_freq") ?? 1,
                NHeads = Required(r, "num_attention_heads"),
                NRoutedExperts = nRouted,
                NSharedExperts = Int(r, "n_shared_experts") ?? 0,
                NActivatedExperts = nRouted > 0 ? Required(r, "num_experts_per_tok") : 0,
                NExpertGroups = Int(r, "n_group") ?? 1,
                NLimitedGroups = Int(r, "topk_group") ?? 1,
                TopkMethod = topk switch
                {
                    "greedy" => TopkMethod.Greedy,
                    "group_limited_greedy" => TopkMethod.GroupLimitedGreedy,
                    "noaux_tc" => TopkMethod.NoAuxTc,
                    _ => throw new NotSupportedException($"{FileName}: topk_method '{topk}' is not supported; supported: greedy, group_limited_greedy, noaux_tc"),
                },
                ScoreFunc = scoring switch
                {
                    "softmax" => ScoreFunc.Softmax,
                    "sigmoid" => ScoreFunc.Sigmoid,
                    _ => throw new NotSupportedException($"{FileName}: scoring_func '{scoring}' is not supported; supported: softmax, sigmoid"),
                },
                NormTopkProb = Bool(r, "norm_topk_prob") ?? v3,
                RouteScale = Num(r, "routed_scaling_factor") ?? (v3 ? 2.5 : 1.0),
                QLoraRank = Int(r, "q_lora_rank") ?? 0,
                KvLoraRank = Required(r, "kv_lora_rank"),
                QkNopeHeadDim = Required(r, "qk_nope_head_dim"),
                QkRopeHeadDim = Required(r, "qk_rope_head_dim"),
                VHeadDim = Required(r, "v_head_dim"),
                RopeTheta = Num(r, "rope_theta") ?? 10000,
                Yarn = ParseRopeScaling(r),
                MaxPositionEmbeddings = Int(r, "max_position_embeddings") ?? (v3 ? 4096 : 2048),
                RmsNormEps = Num(r, "rms_norm_eps") ?? 1e-6,
                NMtpLayers = Int(r, "num_nextn_predict_layers") ?? 0,
                TieWordEmbeddings = Bool(r, "tie_word_embeddings") ?? false,
                BosTokenId = Int(r, "bos_token_id"),
                EosTokenId = FirstInt(r, "eos_token_id"),
                Fp8BlockSize = ParseQuantization(r),
                TorchDtype = Str(r, "torch_dtype"),
            };
            config.Validate();
            return config;
        }
    }

    private static YarnScaling? ParseRopeScaling(JsonElement r)
    {
        if (!r.TryGetProperty("rope_scaling", out JsonElement s) || s.ValueKind == JsonValueKind.Null) return null;
        if (s.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{FileName}: rope_scaling must be an object or null");
        string type = Str(s, "type", "rope_scaling.") ?? Str(s, "rope_type", "rope_scaling.") ?? throw Missing("rope_scaling.type");
        if (type != "yarn")
            throw new NotSupportedException($"{FileName}: rope_scaling.type '{type}' is not supported; supported: yarn (or rope_scaling null)");
        return new YarnScaling(
            Factor: Num(s, "factor", "rope_scaling.") ?? throw Missing("rope_scaling.factor"),
            OriginalMaxPositionEmbeddings: Int(s, "original_max_position_embeddings", "rope_scaling.") ?? throw Missing("rope_scaling.original_max_position_embeddings"),
            BetaFast: Num(s, "beta_fast", "rope_scaling.") ?? 32,
            BetaSlow: Num(s, "beta_slow", "rope_scaling.") ?? 1,
            Mscale: Num(s, "mscale", "rope_scaling.") ?? 1,
            MscaleAllDim: Num(s, "mscale_all_dim", "rope_scaling.") ?? 0);
    }

    private static (int, int)? ParseQuantization(JsonElement r)
    {
        if (!r.TryGetProperty("quantization_config", out JsonElement q) || q.ValueKind != JsonValueKind.Object) return null;
        string method = Str(q, "quant_method", "quantization_config.") ?? throw Missing("quantization_config.quant_method");
        if (method != "fp8")
            throw new NotSupportedException($"{FileName}: quantization_config.quant_method '{method}' is not supported; supported: fp8");
        string fmt = Str(q, "fmt", "quantization_config.") ?? "e4m3";
        if (fmt != "e4m3")
            throw new NotSupportedException($"{FileName}: quantization_config.fmt '{fmt}' is not supported; supported: e4m3");
        if (!q.TryGetProperty("weight_block_size", out JsonElement b)) return (128, 128);
        if (b.ValueKind != JsonValueKind.Array || b.GetArrayLength() != 2 || !b[0].TryGetInt32(out int br) || !b[1].TryGetInt32(out int bc))
            throw new InvalidDataException($"{FileName}: quantization_config.weight_block_size must be [rows, cols], found {b.GetRawText()}");
        return (br, bc);
    }

    private static InvalidDataException Missing(string field) => new($"{FileName}: required field '{field}' is missing");

    private static int Required(JsonElement r, string name) => Int(r, name) ?? throw Missing(name);

    private static bool Present(JsonElement r, string name, out JsonElement v) =>
        r.TryGetProperty(name, out v) && v.ValueKind != JsonValueKind.Null;

    private static int? Int(JsonElement r, string name, string prefix = "")
    {
        if (!Present(r, name, out JsonElement v)) return null;
        if (v.ValueKind == JsonValueKind.Number)
        {
            if (v.TryGetInt32(out int i)) return i;
            if (v.TryGetDouble(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
        }
        throw new InvalidDataException($"{FileName}: field '{prefix}{name}' must be an integer, found {v.GetRawText()}");
    }

    private static int? FirstInt(JsonElement r, string name)
    {
        if (Present(r, name, out JsonElement v) && v.ValueKind == JsonValueKind.Array)
            return v.GetArrayLength() > 0 && v[0].TryGetInt32(out int i) ? i : null;
        return Int(r, name);
    }

    private static double? Num(JsonElement r, string name, string prefix = "")
    {
        if (!Present(r, name, out JsonElement v)) return null;
        if (v.ValueKind == JsonValueKind.Number) return v.GetDouble();
        throw new InvalidDataException($"{FileName}: field '{prefix}{name}' must be a number, found {v.GetRawText()}");
    }

    private static bool? Bool(JsonElement r, string name)
    {
        if (!Present(r, name, out JsonElement v)) return null;
        if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) return v.GetBoolean();
        throw new InvalidDataException($"{FileName}: field '{name}' must be true or false, found {v.GetRawText()}");
    }

    private static string? Str(JsonElement r, string name, string prefix = "")
    {
        if (!Present(r, name, out JsonElement v)) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        throw new InvalidDataException($"{FileName}: field '{prefix}{name}' must be a string, found {v.GetRawText()}");
    }

    /// <summary>config.json's spelling of a topk_method.</summary>
    public static string TopkMethodName(TopkMethod m) => m switch
    {
        TopkMethod.Greedy => "greedy",
        TopkMethod.GroupLimitedGreedy => "group_limited_greedy",
        _ => "noaux_tc",
    };

    /// <summary>config.json's spelling of a scoring_func.</summary>
    public static string ScoreFuncName(ScoreFunc f) => f == ScoreFunc.Sigmoid ? "sigmoid" : "softmax";

    /// <summary>The config.json of a config, with the fields and spellings of the released DeepSeek configs.</summary>
    public static Dictionary<string, object?> ToJsonObject(ModelConfig c, WeightFormat storage)
    {
        bool v3 = c.ModelType == "deepseek_v3";
        var o = new Dictionary<string, object?>
        {
            ["architectures"] = new[] { v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM" },
            ["attention_bias"] = false,
            ["attention_dropout"] = 0.0,
            ["bos_token_id"] = c.BosTokenId,
            ["eos_token_id"] = c.EosTokenId,
            ["first_k_dense_replace"] = c.NDenseLayers,
            ["hidden_act"] = "silu",
            ["hidden_size"] = c.Dim,
            ["initializer_range"] = 0.02,
            ["intermediate_size"] = c.InterDim,
            ["kv_lora_rank"] = c.KvLoraRank,
            ["max_position_embeddings"] = c.MaxPositionEmbeddings,
            ["model_type"] = c.ModelType,
            ["moe_intermediate_size"] = c.MoeInterDim,
            ["moe_layer_freq"] = c.MoeLayerFreq,
            ["n_group"] = c.NExpertGroups,
            ["n_routed_experts"] = c.NRoutedExperts,
            ["n_shared_experts"] = c.NSharedExperts,
            ["norm_topk_prob"] = c.NormTopkProb,
            ["num_attention_heads"] = c.NHeads,
            ["num_experts_per_tok"] = c.NActivatedExperts,
            ["num_hidden_layers"] = c.NLayers,
            ["num_key_value_heads"] = c.NHeads,
            ["q_lora_rank"] = c.HasQLora ? c.QLoraRank : null,
            ["qk_nope_head_dim"] = c.QkNopeHeadDim,
            ["qk_rope_head_dim"] = c.QkRopeHeadDim,
            ["rms_norm_eps"] = c.RmsNormEps,
            ["rope_scaling"] = c.Yarn is { } y ? new Dictionary<string, object>
            {
                ["beta_fast"] = y.BetaFast, ["beta_slow"] = y.BetaSlow, ["factor"] = y.Factor, ["mscale"] = y.Mscale,
                ["mscale_all_dim"] = y.MscaleAllDim, ["original_max_position_embeddings"] = y.OriginalMaxPositionEmbeddings, ["type"] = "yarn",
            } : null,
            ["rope_theta"] = c.RopeTheta,
            ["routed_scaling_factor"] = c.RouteScale,
            ["scoring_func"] = ScoreFuncName(c.ScoreFunc),
            ["tie_word_embeddings"] = c.TieWordEmbeddings,
            ["topk_group"] = c.NLimitedGroups,
            ["topk_method"] = TopkMethodName(c.TopkMethod),
            ["torch_dtype"] = storage switch { WeightFormat.BF16 or WeightFormat.FP8 => "bfloat16", WeightFormat.F16 => "float16", _ => "float32" },
            ["use_cache"] = true,
            ["v_head_dim"] = c.VHeadDim,
            ["vocab_size"] = c.VocabSize,
        };
        if (v3) o["num_nextn_predict_layers"] = c.NMtpLayers;
        if (storage == WeightFormat.FP8)
        {
            (int br, int bc) = c.Fp8BlockSize ?? (128, 128);
            o["quantization_config"] = new Dictionary<string, object>
            {
                ["activation_scheme"] = "dynamic", ["fmt"] = "e4m3", ["quant_method"] = "fp8", ["weight_block_size"] = new[] { br, bc },
            };
        }
        return o;
    }
}
