using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss inspect --model DIR|FILE.gguf [--json] [--metadata]</c>: the architecture summary of a model; with
/// <c>--metadata</c>, a GGUF file's keys and tensors (as gguf-dump lists them).</summary>
internal static class InspectCommand
{
    public static Command Create(TextWriter stdout)
    {
        Option<string> model = CliApp.ModelOption();
        var json = new Option<bool>("--json") { Description = "print the summary as JSON" };
        var metadata = new Option<bool>("--metadata") { Description = "GGUF: list every metadata key and tensor" };
        var cmd = new Command("inspect", "Print the architecture summary: layers, heads, ranks, experts, routing, parameters, KV-cache size") { model, json, metadata };
        cmd.SetAction(r =>
        {
            if (r.GetValue(metadata))
            {
                WriteGguf(r.GetValue(model)!, stdout);
                return 0;
            }
            ModelSummary s = ModelSummary.FromDirectory(r.GetValue(model)!);
            if (r.GetValue(json)) WriteJson(s, stdout);
            else WriteText(s, stdout);
            return 0;
        });
        return cmd;
    }

    private static void WriteGguf(string path, TextWriter o)
    {
        if (!Formats.Gguf.GgufFile.IsGguf(path) || !File.Exists(path))
            throw new ArgumentException($"--metadata lists a GGUF file's contents; '{path}' is not a .gguf file");
        using var ck = Formats.Gguf.GgufCheckpoint.Open(path);
        foreach (Formats.Gguf.GgufFile f in ck.Files)
        {
            o.WriteLine($"{f.FileName}: GGUF v{f.Version}, {f.Metadata.Count} keys, {f.TensorList.Count} tensors");
            foreach (var (key, value) in f.Metadata)
                o.WriteLine($"  {key,-48} {value.Type,-8} {(key == Formats.TensorNames.GgufKeys.ChatTemplate ? $"({((string)value.Value).Length} characters)" : value.ToString())}");
            foreach (Formats.Gguf.GgufTensorInfo t in f.TensorList)
                o.WriteLine($"  {t.Name,-48} {Kernels.Quant.GgmlBlocks.Name(t.Type),-5} {t.FormatDims()}");
        }
    }

    private static string Billions(long n) => n >= 1_000_000_000 ? $"{n / 1e9:F2}B" : n >= 1_000_000 ? $"{n / 1e6:F2}M" : $"{n / 1e3:F2}K";

    private static void WriteText(ModelSummary s, TextWriter o)
    {
        ModelConfig c = s.Config;
        o.WriteLine($"model_type            {c.ModelType}");
        o.WriteLine($"layers                {c.NLayers} ({s.DenseLayers} dense, {s.MoeLayers} MoE) + {c.NMtpLayers} MTP");
        o.WriteLine($"hidden / vocab        {c.Dim} / {c.VocabSize}");
        o.WriteLine($"attention             MLA, {c.NHeads} heads, q_lora_rank {(c.HasQLora ? c.QLoraRank.ToString() : "none (q_proj)")}, kv_lora_rank {c.KvLoraRank}, qk_nope {c.QkNopeHeadDim}, qk_rope {c.QkRopeHeadDim}, v {c.VHeadDim}");
        o.WriteLine($"rope                  theta {c.RopeTheta}{(c.Yarn is { } y ? $", YaRN factor {y.Factor} (original {y.OriginalMaxPositionEmbeddings}), mscale {y.Mscale}/{y.MscaleAllDim}" : "")}, softmax scale {c.SoftmaxScale:G6}");
        o.WriteLine($"context               {c.MaxPositionEmbeddings}");
        o.WriteLine($"dense MLP             intermediate {c.InterDim}");
        if (c.NRoutedExperts > 0)
            o.WriteLine($"experts               {c.NRoutedExperts} routed + {c.NSharedExperts} shared, intermediate {c.MoeInterDim}");
        o.WriteLine($"routing               {s.RoutingDescription}");
        o.WriteLine($"parameters            {s.TotalParameters:N0} ({Billions(s.TotalParameters)}) total, {s.ActiveParameters:N0} ({Billions(s.ActiveParameters)}) active per token");
        if (c.NMtpLayers > 0) o.WriteLine($"MTP parameters        {s.MtpParameters:N0} ({Billions(s.MtpParameters)})");
        o.WriteLine($"KV cache per token    latent {s.LatentValuesPerTokenPerLayer} values/layer ({s.LatentBytesPerToken:N0} B over all layers, f32) vs MHA {s.MhaValuesPerTokenPerLayer} values/layer ({s.MhaBytesPerToken:N0} B): {100.0 * s.LatentValuesPerTokenPerLayer / s.MhaValuesPerTokenPerLayer:F2}%");
        o.WriteLine($"weights               {(s.WeightDTypes.Count == 0 ? "none found (config only)" : string.Join(", ", s.WeightDTypes.Select(p => $"{p.Key} x{p.Value}")))}{(c.Fp8BlockSize is { } b ? $"; fp8 blocks {b.Rows}x{b.Cols}" : "")}");
    }

    private static void WriteJson(ModelSummary s, TextWriter o)
    {
        ModelConfig c = s.Config;
        var doc = new Dictionary<string, object?>
        {
            ["model_type"] = c.ModelType,
            ["layers"] = c.NLayers,
            ["dense_layers"] = s.DenseLayers,
            ["moe_layers"] = s.MoeLayers,
            ["mtp_layers"] = c.NMtpLayers,
            ["hidden_size"] = c.Dim,
            ["vocab_size"] = c.VocabSize,
            ["heads"] = c.NHeads,
            ["q_lora_rank"] = c.HasQLora ? c.QLoraRank : null,
            ["kv_lora_rank"] = c.KvLoraRank,
            ["qk_nope_head_dim"] = c.QkNopeHeadDim,
            ["qk_rope_head_dim"] = c.QkRopeHeadDim,
            ["v_head_dim"] = c.VHeadDim,
            ["intermediate_size"] = c.InterDim,
            ["moe_intermediate_size"] = c.MoeInterDim,
            ["routed_experts"] = c.NRoutedExperts,
            ["shared_experts"] = c.NSharedExperts,
            ["experts_per_token"] = c.NActivatedExperts,
            ["scoring_func"] = Formats.HfConfig.ScoreFuncName(c.ScoreFunc),
            ["topk_method"] = Formats.HfConfig.TopkMethodName(c.TopkMethod),
            ["n_group"] = c.NExpertGroups,
            ["topk_group"] = c.NLimitedGroups,
            ["routing"] = s.RoutingDescription,
            ["max_position_embeddings"] = c.MaxPositionEmbeddings,
            ["total_parameters"] = s.TotalParameters,
            ["active_parameters"] = s.ActiveParameters,
            ["mtp_parameters"] = s.MtpParameters,
            ["kv_cache"] = new Dictionary<string, object>
            {
                ["latent_values_per_token_per_layer"] = s.LatentValuesPerTokenPerLayer,
                ["mha_values_per_token_per_layer"] = s.MhaValuesPerTokenPerLayer,
                ["latent_bytes_per_token"] = s.LatentBytesPerToken,
                ["mha_bytes_per_token"] = s.MhaBytesPerToken,
                ["dtype"] = "f32",
            },
            ["weight_dtypes"] = s.WeightDTypes,
        };
        o.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
    }
}
