using DeepSeekSharp.Inference.Sampling;

namespace DeepSeekSharp.Inference;

/// <summary>Options of one generation. Defaults: up to 512 new tokens, sampling defaults, no stop strings.</summary>
public sealed record GenerationOptions
{
    public SamplingOptions Sampling { get; init; } = new();
    /// <summary>Most new tokens to generate (reasoning included); null = until the context is full.</summary>
    public int? MaxTokens { get; init; } = 512;
    /// <summary>Generation stops before any of these strings; they are not part of the output.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];
    /// <summary>Speculative decoding; ignored (plain decoding) when the model has no MTP module.</summary>
    public Speculation Speculation { get; init; }
    /// <summary>Drafts per pass with <see cref="Speculation.Mtp"/>: 1 is DeepSeek-V3's own use of its module; more
    /// chain the module on its own output (1–8). <see cref="Generator"/> honours it; the batch scheduler drafts one.</summary>
    public int SpeculativeTokens { get; init; } = 1;
    /// <summary>What the answer must be (JSON, a schema, a grammar), enforced by constrained decoding; null = free
    /// text. Reasoning before <c>&lt;/think&gt;</c> is not constrained.</summary>
    public Constraints.OutputFormat? Format { get; init; }
    /// <summary>Most tokens of reasoning (the closing tag included): when a model that thinks first reaches it,
    /// <c>&lt;/think&gt;</c> is written for it and the answer follows. 0 = no reasoning; null = no limit.</summary>
    public int? ReasoningBudget { get; init; }
    /// <summary>Log-probabilities of each generated token and of the <c>TopLogprobs</c> likeliest alternatives
    /// (0–20; 0 = the chosen token's only); null = none. From the model's logits before any sampling filter.</summary>
    public int? TopLogprobs { get; init; }
    /// <summary>Functions the model may call; its calls come back as <see cref="GenerationUpdate.ToolCall"/> pieces,
    /// never as text. The prompt must describe them (see <see cref="ChatPromptOptions.Tools"/>).</summary>
    public IReadOnlyList<Inference.Tools.ToolDefinition>? Tools { get; init; }
    /// <summary>Whether the model must call a tool (<c>required</c>, a named function: enforced by constrained decoding
    /// against the tools' parameter schemas) or may (<c>auto</c>, the default) or may not (<c>none</c>).</summary>
    public Inference.Tools.ToolChoice ToolChoice { get; init; } = Inference.Tools.ToolChoice.Auto;
    /// <summary>Whether a forced reply may hold several calls.</summary>
    public bool ParallelToolCalls { get; init; } = true;

    /// <summary>Reasoning efforts (OpenAI's <c>reasoning_effort</c> names) as reasoning budgets: none 0 (thinking off),
    /// minimal 256, low 1,024, medium 4,096 tokens, high and above no limit.</summary>
    public static readonly IReadOnlyDictionary<string, int?> EffortBudgets = new Dictionary<string, int?>
    {
        ["none"] = 0, ["minimal"] = 256, ["low"] = 1024, ["medium"] = 4096, ["high"] = null, ["xhigh"] = null,
    };

    /// <summary>Most drafts <see cref="SpeculativeTokens"/> may ask for.</summary>
    public const int MaxSpeculativeTokens = Speculator.MaxDrafts;

    /// <summary>Most alternatives <see cref="TopLogprobs"/> may ask for (as OpenAI).</summary>
    public const int MaxTopLogprobs = 20;

    public void Validate(int vocabSize)
    {
        Sampling.Validate(vocabSize);
        if (ReasoningBudget is < 0) throw new ArgumentOutOfRangeException("reasoning_budget", ReasoningBudget, $"'reasoning_budget' must be ≥ 0, got {ReasoningBudget}");
        if (ToolChoice.FunctionName is { } name && Tools?.Any(t => t.Name == name) != true)
            throw new ArgumentException($"'tool_choice' names '{name}', which is not among the tools", "tool_choice");
        if (ToolChoice.ForcesCall && Tools is not { Count: > 0 })
            throw new ArgumentException($"'tool_choice' {ToolChoice.Mode} needs tools", "tool_choice");
        if (TopLogprobs is < 0 or > MaxTopLogprobs)
            throw new ArgumentOutOfRangeException("top_logprobs", TopLogprobs, $"'top_logprobs' must be in [0, {MaxTopLogprobs}], got {TopLogprobs}");
        if (SpeculativeTokens is < 1 or > MaxSpeculativeTokens)
            throw new ArgumentOutOfRangeException("speculative_tokens", SpeculativeTokens, $"'speculative_tokens' must be in [1, {MaxSpeculativeTokens}], got {SpeculativeTokens}");
        if (MaxTokens is < 1) throw new ArgumentOutOfRangeException("max_tokens", MaxTokens, $"'max_tokens' must be ≥ 1, got {MaxTokens}");
        foreach (string s in Stop)
            if (string.IsNullOrEmpty(s)) throw new ArgumentException("'stop' strings must not be empty", "stop");
    }
}

/// <summary>How a generation drafts tokens ahead of the model.</summary>
public enum Speculation
{
    /// <summary>One token per forward pass.</summary>
    Off,
    /// <summary>DeepSeek-V3's multi-token-prediction module drafts the token after next; the model verifies the draft
    /// and the next token in one pass. Greedy output is identical to <see cref="Off"/>; sampled output has exactly
    /// the same distribution.</summary>
    Mtp,
}

public enum FinishReason
{
    /// <summary>End-of-sequence token or a stop string.</summary>
    Stop,
    /// <summary>max_tokens reached or the context is full.</summary>
    Length,
    /// <summary>The model called tools and stopped, waiting for their results.</summary>
    ToolCalls,
}

/// <summary>Figures of one finished generation.</summary>
public sealed record GenerationUsage(
    int PromptTokens,
    int CompletionTokens,
    int ReasoningTokens,
    FinishReason FinishReason,
    TimeSpan TimeToFirstToken,
    TimeSpan Total,
    int DraftTokens = 0,
    int AcceptedDraftTokens = 0,
    int CachedPromptTokens = 0)
{
    /// <summary>The share of drafted tokens the model accepted (0 without speculation).</summary>
    public double DraftAcceptance => DraftTokens == 0 ? 0 : (double)AcceptedDraftTokens / DraftTokens;

    /// <summary>Decode speed: tokens after the first one per second of decoding.</summary>
    public double DecodeTokensPerSecond =>
        CompletionTokens > 1 && Total > TimeToFirstToken ? (CompletionTokens - 1) / (Total - TimeToFirstToken).TotalSeconds : 0;

    public override string ToString() =>
        $"prompt {PromptTokens} tokens{(CachedPromptTokens > 0 ? $" ({CachedPromptTokens} cached)" : "")}, completion {CompletionTokens} ({ReasoningTokens} reasoning), finish {FinishReason.ToString().ToLowerInvariant()}, " +
        $"first token {TimeToFirstToken.TotalMilliseconds:F0} ms, decode {DecodeTokensPerSecond:F1} tokens/s" +
        (DraftTokens > 0 ? $", drafts accepted {AcceptedDraftTokens}/{DraftTokens} ({DraftAcceptance:P0})" : "");
}

/// <summary>A piece of streamed output: text of one part, a piece of a tool call (with empty text), or (last) the
/// usage with empty text. With
/// <see cref="GenerationOptions.TopLogprobs"/>, the tokens generated since the previous update.</summary>
public sealed record GenerationUpdate(Text.ReplyPart Part, string Text, GenerationUsage? Usage = null, IReadOnlyList<TokenLogprob>? Logprobs = null,
    Tools.ToolCallDelta? ToolCall = null);

/// <summary>One generated token's log-probability under the model, with its likeliest alternatives (highest first);
/// <see cref="Part"/> is where the token was written (reasoning or answer).</summary>
public sealed record TokenLogprob(int Id, string Token, byte[] Bytes, float Logprob, IReadOnlyList<TokenLogprob> Top, Text.ReplyPart Part = Text.ReplyPart.Answer);
