using System.CommandLine;
using DeepSeekSharp.Inference;
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

    public void AddTo(Command c)
    {
        c.Options.Add(MaxTokens);
        c.Options.Add(Temperature);
        c.Options.Add(TopP);
        c.Options.Add(TopK);
        c.Options.Add(MinP);
        c.Options.Add(Seed);
        c.Options.Add(Context);
        c.Options.Add(Speculative);
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

    public GenerationOptions Read(ParseResult r) => new()
    {
        MaxTokens = r.GetValue(MaxTokens),
        Speculation = ParseSpeculation(r.GetValue(Speculative)),
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
