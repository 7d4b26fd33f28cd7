using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Constraints;
using DeepSeekSharp.Inference.Sampling;

namespace DeepSeekSharp.Cli;

/// <summary>Sampling and length options shared by <c>generate</c> and <c>chat</c>. Defaults follow DeepSeek's
/// recommendation for R1 (temperature 0.6, top-p 0.95).</summary>
internal sealed class GenerationCliOptions
{
    public readonly Option<int> MaxTokens = new("--max-tokens") { Description = "most tokens to generate", DefaultValueFactory = _ => 512 };
    public readonly Option<float> Temperature = new("--temperature") { Description = "0 = greedy, up to 2", DefaultValueFactory = _ => 0.6f };
    public readonly Option<float> TopP = new("--top-p") { Description = "nucleus sampling mass in (0, 1]", DefaultValueFactory = _ => 0.95f };
    public readonly Option<int> TopK = new("--top-k") { Description = "keep the k most likely tokens (0 = off)" };
    public readonly Option<float> MinP = new("--min-p") { Description = "drop tokens below min-p × the best one's probability (0 = off)" };
    public readonly Option<ulong?> Seed = new("--seed") { Description = "RNG seed; the same seed gives the same tokens on any machine" };
    public readonly Option<int?> Context = new("--context") { Description = "KV cache positions (default: max_position_embeddings, at most 4096)" };
    public readonly Option<string?> CacheDir = new("--cache-dir")
    {
        Description = "keep the prompt's latent-cache blocks in this folder and reuse them in later runs (a prefix cache on disk)",
    };
    public readonly Option<string> Speculative = new("--speculative")
    {
        Description = "mtp: the model's multi-token-prediction module drafts the token after next and one pass verifies both (same output); off",
        DefaultValueFactory = _ => "off",
    };
    public readonly Option<int> SpeculativeTokens = new("--speculative-tokens")
    {
        Description = "drafts per pass with --speculative mtp: more than 1 chains the module on its own drafts (1-8)",
        DefaultValueFactory = _ => 1,
    };

    public readonly Option<int?> ReasoningBudget = new("--reasoning-budget")
    {
        Description = "most tokens of reasoning; then </think> is written and the answer follows (0 = thinking off)",
    };
    public readonly Option<string?> Thinking = new("--thinking")
    {
        Description = "on or off for models that reason first (default: the chat template's)",
    };
    public readonly Option<bool> Json = new("--json") { Description = "the answer is a JSON object (constrained decoding)" };
    public readonly Option<FileInfo?> JsonSchema = new("--json-schema") { Description = "the answer is JSON matching this JSON-schema file (constrained decoding)" };

    public void AddTo(Command c)
    {
        c.Options.Add(ReasoningBudget);
        c.Options.Add(Thinking);
        c.Options.Add(Json);
        c.Options.Add(JsonSchema);
        c.Options.Add(MaxTokens);
        c.Options.Add(Temperature);
        c.Options.Add(TopP);
        c.Options.Add(TopK);
        c.Options.Add(MinP);
        c.Options.Add(Seed);
        c.Options.Add(Context);
        c.Options.Add(Speculative);
        c.Options.Add(SpeculativeTokens);
        c.Options.Add(CacheDir);
    }

    /// <summary>With --cache-dir, a prefix cache on disk for the generator (written back when disposed); else null.</summary>
    public PrefixCache? AttachCache(ParseResult r, Generator g, TextWriter stderr)
    {
        if (r.GetValue(CacheDir) is not { } dir) return null;
        var cache = PrefixCache.For(g.Model, 256L << 20, dir, log: stderr.WriteLine);
        g.PrefixCache = cache;
        return cache;
    }

    public static Speculation ParseSpeculation(string? value) => value switch
    {
        null or "off" => Speculation.Off,
        "mtp" => Speculation.Mtp,
        _ => throw new ArgumentException($"--speculative '{value}' is not supported; supported: mtp, off"),
    };

    /// <summary>Says on <paramref name="stderr"/> when speculation was asked for but the model cannot draft.</summary>
    public static void WarnIfNoDrafts(GenerationOptions options, Generator g, TextWriter stderr)
    {
        if (options.Speculation == Speculation.Mtp && !g.CanSpeculate)
            stderr.WriteLine($"note: the model has no MTP module (num_nextn_predict_layers = {g.Model.Config.NMtpLayers}); decoding without speculation");
    }

    /// <summary>Thinking on/off as the chat prompt takes it (null = the template's default).</summary>
    public ChatPromptOptions? ReadPrompt(ParseResult r) => r.GetValue(Thinking) switch
    {
        null => null,
        "on" => new ChatPromptOptions { Thinking = true },
        "off" => new ChatPromptOptions { Thinking = false },
        var v => throw new ArgumentException($"--thinking '{v}' is not supported; supported: on, off"),
    };

    /// <summary>--json or --json-schema FILE (a schema we cannot enforce is refused here, naming where).</summary>
    private OutputFormat? ReadFormat(ParseResult r)
    {
        FileInfo? schemaFile = r.GetValue(JsonSchema);
        if (schemaFile is null) return r.GetValue(Json) ? OutputFormat.JsonObject : null;
        if (r.GetValue(Json)) throw new ArgumentException("--json and --json-schema exclude each other");
        if (!schemaFile.Exists) throw new FileNotFoundException($"--json-schema: '{schemaFile.FullName}' does not exist");
        JsonElement schema;
        try { schema = JsonDocument.Parse(File.ReadAllText(schemaFile.FullName)).RootElement.Clone(); }
        catch (JsonException e) { throw new ArgumentException($"--json-schema: '{schemaFile.Name}' is not JSON: {e.Message}"); }
        try { return OutputFormat.JsonSchema(schema); }
        catch (SchemaException e) { throw new ArgumentException($"--json-schema: {e.Message}"); }
    }

    public GenerationOptions Read(ParseResult r) => new()
    {
        MaxTokens = r.GetValue(MaxTokens),
        Speculation = ParseSpeculation(r.GetValue(Speculative)),
        SpeculativeTokens = r.GetValue(SpeculativeTokens),
        ReasoningBudget = r.GetValue(ReasoningBudget),
        Format = ReadFormat(r),
        Sampling = new SamplingOptions
        {
            Temperature = r.GetValue(Temperature),
            TopP = r.GetValue(TopP),
            TopK = r.GetValue(TopK),
            MinP = r.GetValue(MinP),
            Seed = r.GetValue(Seed),
        },
    };
}
