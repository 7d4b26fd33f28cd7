using System.Runtime.CompilerServices;
using System.Text.Json;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Text;
using Microsoft.Extensions.AI;

namespace DeepSeekSharp.Inference;

public static class ChatClientExtensions
{
    /// <summary>An <see cref="IChatClient"/> over this engine: the model's chat template, <see cref="ChatOptions"/>
    /// mapped to sampling options, reasoning streamed as <see cref="TextReasoningContent"/> and the answer as
    /// <see cref="TextContent"/>, usage (with reasoning tokens) and the finish reason on the last update.</summary>
    public static IChatClient AsChatClient(this IGenerationEngine engine, string? modelId = null) =>
        new DeepSeekChatClient(engine, modelId ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(engine.Model.Path)));
}

internal sealed class DeepSeekChatClient(IGenerationEngine engine, string modelId) : IChatClient
{
    private readonly ChatClientMetadata _metadata = new("deepseeksharp", null, modelId);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (ChatResponseUpdate u in GetStreamingResponseAsync(messages, options, cancellationToken)) updates.Add(u);
        return updates.ToChatResponse();
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        JsonElement conversation = ToJson(messages, options?.Instructions);
        GenerationOptions generation = Map(options);
        ChatPromptOptions? prompt = options?.AdditionalProperties?.TryGetValue("thinking", out object? t) == true && t is bool thinking
            ? new ChatPromptOptions { Thinking = thinking } : null;
        string responseId = "chatcmpl-" + Guid.NewGuid().ToString("N");
        DateTimeOffset created = DateTimeOffset.UtcNow;
        await foreach (GenerationUpdate u in engine.ChatAsync(conversation, generation, cancellationToken, prompt))
        {
            var update = new ChatResponseUpdate(ChatRole.Assistant, [])
            {
                ResponseId = responseId,
                MessageId = responseId,
                ModelId = modelId,
                CreatedAt = created,
            };
            if (u.Usage is { } usage)
            {
                update.FinishReason = usage.FinishReason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;
                update.Contents.Add(new UsageContent(new UsageDetails
                {
                    InputTokenCount = usage.PromptTokens,
                    OutputTokenCount = usage.CompletionTokens,
                    TotalTokenCount = usage.PromptTokens + usage.CompletionTokens,
                    ReasoningTokenCount = usage.ReasoningTokens,
                }));
            }
            else update.Contents.Add(u.Part == ReplyPart.Reasoning ? new TextReasoningContent(u.Text) : new TextContent(u.Text));
            yield return update;
        }
    }

    /// <summary>ChatOptions → our options; the caller's object is only read. <see cref="ChatOptions.ResponseFormat"/>
    /// JSON (with or without a schema) is enforced by constrained decoding; <see cref="ChatOptions.Reasoning"/>'s effort
    /// becomes a reasoning budget (<see cref="GenerationOptions.EffortBudgets"/>), as does an additional property
    /// <c>reasoning_budget</c>; <c>thinking</c> (true/false) switches thinking on or off.</summary>
    internal static GenerationOptions Map(ChatOptions? o)
    {
        if (o is null) return new GenerationOptions { MaxTokens = null };
        var sampling = new SamplingOptions
        {
            Temperature = o.Temperature ?? 1f,
            TopP = o.TopP ?? 1f,
            TopK = o.TopK ?? 0,
            PresencePenalty = o.PresencePenalty ?? 0,
            FrequencyPenalty = o.FrequencyPenalty ?? 0,
            Seed = o.Seed is { } s ? unchecked((ulong)s) : null,
        };
        int? budget = o.Reasoning?.Effort is { } effort
            ? GenerationOptions.EffortBudgets[effort switch
            {
                ReasoningEffort.None => "none",
                ReasoningEffort.Low => "low",
                ReasoningEffort.Medium => "medium",
                _ => "high",
            }]
            : null;
        if (o.AdditionalProperties?.TryGetValue("reasoning_budget", out object? b) == true)
            budget = b is int i ? i : b is long l ? (int)l : throw new ArgumentException("the 'reasoning_budget' additional property must be an integer", nameof(o));
        return new GenerationOptions
        {
            Sampling = sampling,
            MaxTokens = o.MaxOutputTokens,
            Stop = o.StopSequences is { Count: > 0 } stops ? [.. stops] : [],
            ReasoningBudget = budget,
            Format = o.ResponseFormat switch
            {
                ChatResponseFormatJson { Schema: { } schema } => Constraints.OutputFormat.JsonSchema(schema),
                ChatResponseFormatJson => Constraints.OutputFormat.JsonObject,
                _ => null,
            },
        };
    }

    private static JsonElement ToJson(IEnumerable<ChatMessage> messages, string? instructions)
    {
        var list = new List<Dictionary<string, string>>();
        if (!string.IsNullOrEmpty(instructions)) list.Add(new() { ["role"] = "system", ["content"] = instructions });
        foreach (ChatMessage m in messages)
            list.Add(new() { ["role"] = m.Role.Value, ["content"] = m.Text });
        if (list.Count == 0) throw new ArgumentException("no messages", nameof(messages));
        return JsonSerializer.SerializeToElement(list);
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? _metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(engine) ? engine
        : null;

    public void Dispose() { }
}
