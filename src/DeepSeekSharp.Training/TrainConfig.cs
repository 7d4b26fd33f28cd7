using System.Text.Json;
using System.Text.Json.Serialization;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Training;

/// <summary>What <c>dss train --config train.json</c> reads. Field names are snake_case; an unknown field is an error
/// (a typo would otherwise silently train with a default). Paths are relative to the config file.</summary>
public sealed record TrainConfig
{
    /// <summary>The model shape to train from random weights: a preset name (<see cref="RandomCheckpoint.Presets"/>) or a
    /// config.json object. Exactly one of this and <see cref="InitFrom"/>.</summary>
    public JsonElement? Model { get; init; }
    /// <summary>With a preset: cut it to this many layers.</summary>
    public int? Layers { get; init; }
    /// <summary>A Hugging Face checkpoint folder to start from (its config.json gives the shape).</summary>
    public string? InitFrom { get; init; }
    /// <summary>Folder with tokenizer.json and tokenizer_config.json copied into checkpoints (default: the init
    /// checkpoint's, else the bundled DeepSeek-V3 tokenizer).</summary>
    public string? Tokenizer { get; init; }
    /// <summary>Token shards (<c>dss prepare-data</c>).</summary>
    public string[] Data { get; init; } = [];
    public double ValidationFraction { get; init; } = 0.05;
    /// <summary>Output folder: checkpoints, metrics.csv, plots.</summary>
    public string Out { get; init; } = "run";
    public ulong Seed { get; init; } = 1;
    /// <summary>Worker threads (0 = all cores).</summary>
    public int Threads { get; init; }

    public int BatchSize { get; init; } = 8;
    public int SeqLen { get; init; } = 128;
    public int GradAccum { get; init; } = 1;
    public int Steps { get; init; } = 1000;

    public double Lr { get; init; } = 1e-3;
    public double MinLr { get; init; } = 1e-4;
    public int WarmupSteps { get; init; } = 50;
    public double WeightDecay { get; init; } = 0.1;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    public double Eps { get; init; } = 1e-8;
    /// <summary>Clip the global gradient norm to this (0 = no clipping).</summary>
    public double GradClip { get; init; } = 1.0;

    /// <summary>λ, the MTP loss weight, until <see cref="MtpLambdaSwitchStep"/>; then <see cref="MtpLambdaFinal"/>
    /// (DeepSeek-V3: 0.3 for the first 10T tokens, 0.1 for the last 4.8T).</summary>
    public double MtpLambda { get; init; } = 0.3;
    public double MtpLambdaFinal { get; init; } = 0.1;
    public int? MtpLambdaSwitchStep { get; init; }
    /// <summary>α, the sequence-wise balance loss weight.</summary>
    public double BalanceAlpha { get; init; } = 1e-4;
    /// <summary>γ, the bias update rate of auxiliary-loss-free balancing (0 turns it off).</summary>
    public double BiasGamma { get; init; } = 0.001;

    public int LogInterval { get; init; } = 1;
    public int EvalInterval { get; init; } = 100;
    /// <summary>Validation batches per evaluation (0 = the whole split).</summary>
    public int EvalBatches { get; init; } = 8;
    public int CheckpointInterval { get; init; } = 200;
    /// <summary>Checkpoints kept (oldest deleted first).</summary>
    public int KeepCheckpoints { get; init; } = 2;

    /// <summary>The folder the config came from (relative paths resolve against it).</summary>
    [JsonIgnore] public string BaseDirectory { get; init; } = ".";

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        WriteIndented = true,
    };

    public static TrainConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"training config '{path}' does not exist");
        return Parse(File.ReadAllText(path), Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    public static TrainConfig Parse(string json, string baseDirectory)
    {
        TrainConfig config;
        try { config = JsonSerializer.Deserialize<TrainConfig>(json, Options) ?? throw new InvalidDataException("training config: empty"); }
        catch (JsonException e)
        {
            string where = e.Path is { Length: > 2 } p ? $" at {p[2..]}" : "";
            string message = e.Message.Contains("could not be mapped", StringComparison.Ordinal)
                ? $"unknown field{where}; known fields: {string.Join(", ", KnownFields())}"
                : $"{e.Message.Split('.')[0]}{where}";
            throw new InvalidDataException($"training config: {message}", e);
        }
        config = config with { BaseDirectory = baseDirectory };
        config.Validate();
        return config;
    }

    public string ToJson() => JsonSerializer.Serialize(this, Options);

    public static IEnumerable<string> KnownFields() =>
        typeof(TrainConfig).GetProperties().Where(p => p.GetCustomAttributes(typeof(JsonIgnoreAttribute), false).Length == 0)
            .Select(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name));

    public string Resolve(string path) => Path.GetFullPath(path, BaseDirectory);

    private static void Fail(string message) => throw new InvalidDataException("training config: " + message);

    public void Validate()
    {
        if ((Model is null) == (InitFrom is null)) Fail("give exactly one of \"model\" (a preset name or a config.json object) and \"init_from\" (a checkpoint folder)");
        if (Data.Length == 0) Fail("\"data\" lists no token shards");
        if (BatchSize < 1) Fail($"batch_size ({BatchSize}) must be ≥ 1");
        if (SeqLen < 2) Fail($"seq_len ({SeqLen}) must be ≥ 2");
        if (GradAccum < 1) Fail($"grad_accum ({GradAccum}) must be ≥ 1");
        if (Steps < 1) Fail($"steps ({Steps}) must be ≥ 1");
        if (Threads < 0) Fail($"threads ({Threads}) must be ≥ 0");
        if (!(Lr > 0)) Fail($"lr ({Lr}) must be > 0");
        if (!(MinLr >= 0 && MinLr <= Lr)) Fail($"min_lr ({MinLr}) must be in [0, lr]");
        if (WarmupSteps < 0) Fail($"warmup_steps ({WarmupSteps}) must be ≥ 0");
        if (!(WeightDecay >= 0)) Fail($"weight_decay ({WeightDecay}) must be ≥ 0");
        if (!(Beta1 >= 0 && Beta1 < 1) || !(Beta2 >= 0 && Beta2 < 1)) Fail($"beta1 ({Beta1}) and beta2 ({Beta2}) must be in [0, 1)");
        if (!(Eps > 0)) Fail($"eps ({Eps}) must be > 0");
        if (!(GradClip >= 0)) Fail($"grad_clip ({GradClip}) must be ≥ 0");
        if (!(MtpLambda >= 0) || !(MtpLambdaFinal >= 0)) Fail("mtp_lambda and mtp_lambda_final must be ≥ 0");
        if (!(BalanceAlpha >= 0)) Fail($"balance_alpha ({BalanceAlpha}) must be ≥ 0");
        if (!(BiasGamma >= 0)) Fail($"bias_gamma ({BiasGamma}) must be ≥ 0");
        if (!(ValidationFraction >= 0 && ValidationFraction < 1)) Fail($"validation_fraction ({ValidationFraction}) must be in [0, 1)");
        if (LogInterval < 1 || EvalInterval < 1 || CheckpointInterval < 1) Fail("log_interval, eval_interval and checkpoint_interval must be ≥ 1");
        if (EvalBatches < 0) Fail($"eval_batches ({EvalBatches}) must be ≥ 0");
        if (KeepCheckpoints < 1) Fail($"keep_checkpoints ({KeepCheckpoints}) must be ≥ 1");
        if (Layers is < 1) Fail($"layers ({Layers}) must be ≥ 1");
        if (Model is { ValueKind: not (JsonValueKind.String or JsonValueKind.Object) }) Fail("\"model\" must be a preset name or a config.json object");
    }

    /// <summary>The model shape: the preset or config object, or the init checkpoint's config.json.</summary>
    public ModelConfig ModelConfig()
    {
        ModelConfig c;
        if (InitFrom is not null) c = HfConfig.Load(Resolve(InitFrom));
        else if (Model!.Value.ValueKind == JsonValueKind.String) c = RandomCheckpoint.Preset(Model.Value.GetString()!, Layers);
        else
        {
            try { c = HfConfig.Parse(Model.Value.GetRawText()); }
            catch (InvalidDataException e) { throw new InvalidDataException($"training config \"model\": {e.Message}", e); }
            if (Layers is { } n) c = c with { NLayers = n, NDenseLayers = Math.Min(c.NDenseLayers, n) };
        }
        c.Validate();
        if (SeqLen > c.MaxPositionEmbeddings) Fail($"seq_len ({SeqLen}) exceeds the model's max_position_embeddings ({c.MaxPositionEmbeddings})");
        return c;
    }

    /// <summary>λ at a step.</summary>
    public double MtpLambdaAt(int step) => MtpLambdaSwitchStep is { } s && step >= s ? MtpLambdaFinal : MtpLambda;
}
