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
        if (generation.Tools is { Count: > 0 } tools && generation.ToolChoice != Tools.ToolChoice.None)
            prompt = (prompt ?? new()) with { Tools = tools };
        string responseId = "chatcmpl-" + Guid.NewGuid().ToString("N");
        DateTimeOffset created = DateTimeOffset.UtcNow;
        var calls = new Tools.ToolCallCollector();
        ChatResponseUpdate Update() => new(ChatRole.Assistant, [])
        {
            ResponseId = responseId,
            MessageId = responseId,
            ModelId = modelId,
            CreatedAt = created,
        };
        await foreach (GenerationUpdate u in engine.ChatAsync(conversation, generation, cancellationToken, prompt))
        {
            if (u.ToolCall is { } d)
            {
                // Function calls are handed over whole (function-invoking middleware acts on complete calls).
                calls.Add(d);
                continue;
            }
            ChatResponseUpdate update = Update();
            if (u.Usage is { } usage)
            {
                foreach (var (id, name, arguments) in calls.Calls)
                    update.Contents.Add(FunctionCallContent.CreateFromParsedArguments(arguments, id, name, ParseArguments));
                update.FinishReason = usage.FinishReason switch
                {
                    FinishReason.Length => ChatFinishReason.Length,
                    FinishReason.ToolCalls => ChatFinishReason.ToolCalls,
                    _ => ChatFinishReason.Stop,
                };
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

    /// <summary>A call's JSON arguments as a dictionary; invalid JSON throws, which
    /// <see cref="FunctionCallContent.CreateFromParsedArguments"/> records on the call as its exception.</summary>
    private static IDictionary<string, object?>? ParseArguments(string json) =>
        JsonSerializer.Deserialize<Dictionary<string, object?>>(json.Length == 0 ? "{}" : json);

    /// <summary>ChatOptions → our options; the caller's object is only read. <see cref="ChatOptions.ResponseFormat"/>
    /// JSON (with or without a schema) is enforced by constrained decoding; <see cref="ChatOptions.Reasoning"/>'s effort
    /// becomes a reasoning budget (<see cref="GenerationOptions.EffortBudgets"/>), as does an additional property
    /// <c>reasoning_budget</c>; <c>thinking</c> (true/false) switches thinking on or off. Tools and the tool mode map
    /// to ours (a required mode is enforced by constrained decoding); calls come back as <see cref="FunctionCallContent"/>.</summary>
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
            Tools = o.Tools is { Count: > 0 } tools
                ? [.. tools.OfType<AIFunctionDeclaration>().Select(f => new Tools.ToolDefinition(f.Name, f.Description, f.JsonSchema))]
                : null,
            ToolChoice = o.ToolMode switch
            {
                NoneChatToolMode => Tools.ToolChoice.None,
                RequiredChatToolMode { RequiredFunctionName: { } name } => Tools.ToolChoice.Function(name),
                RequiredChatToolMode => Tools.ToolChoice.Required,
                _ => Tools.ToolChoice.Auto,
            },
            ParallelToolCalls = o.AllowMultipleToolCalls ?? true,
            Format = o.ResponseFormat switch
            {
                ChatResponseFormatJson { Schema: { } schema } => Constraints.OutputFormat.JsonSchema(schema),
                ChatResponseFormatJson => Constraints.OutputFormat.JsonObject,
                _ => null,
            },
        };
    }

    /// <summary>Messages as OpenAI-style JSON for the template: an assistant's <see cref="FunctionCallContent"/>s become
    /// its <c>tool_calls</c>, each <see cref="FunctionResultContent"/> a <c>tool</c> message.</summary>
    private static JsonElement ToJson(IEnumerable<ChatMessage> messages, string? instructions)
    {
        var list = new List<Dictionary<string, object?>>();
        if (!string.IsNullOrEmpty(instructions)) list.Add(new() { ["role"] = "system", ["content"] = instructions });
        foreach (ChatMessage m in messages)
        {
            var calls = m.Contents.OfType<FunctionCallContent>().Select(c => new Dictionary<string, object?>
            {
                ["id"] = c.CallId,
                ["type"] = "function",
                ["function"] = new Dictionary<string, object?> { ["name"] = c.Name, ["arguments"] = JsonSerializer.Serialize(c.Arguments ?? new Dictionary<string, object?>()) },
            }).ToList();
            var results = m.Contents.OfType<FunctionResultContent>().ToList();
            if (calls.Count > 0)
                list.Add(new() { ["role"] = "assistant", ["content"] = m.Text.Length > 0 ? m.Text : null, ["tool_calls"] = calls });
            else if (results.Count > 0)
                foreach (FunctionResultContent r in results)
                    list.Add(new() { ["role"] = "tool", ["tool_call_id"] = r.CallId, ["content"] = r.Result is string s ? s : JsonSerializer.Serialize(r.Result) });
            else list.Add(new() { ["role"] = m.Role.Value, ["content"] = m.Text });
        }
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
