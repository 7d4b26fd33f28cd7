using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Constraints;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Inference.Tools;

namespace DeepSeekSharp.Server;

/// <summary>What a server does for requests that do not say: speculation, reasoning budget, thinking.</summary>
public sealed record RequestDefaults
{
    public Speculation Speculation { get; init; }
    /// <summary>Most reasoning tokens before the answer is forced (null = no limit).</summary>
    public int? ReasoningBudget { get; init; }
    /// <summary>Thinking on or off for models that reason (null = the chat template's default).</summary>
    public bool? Thinking { get; init; }
}

/// <summary>A validated /v1/chat/completions or /v1/completions request.</summary>
internal sealed record ChatRequest
{
    public required GenerationOptions Options { get; init; }
    public JsonElement Messages { get; init; }     // chat
    public string? Prompt { get; init; }           // completions
    public string? Suffix { get; init; }           // completions: fill in the middle
    public bool Stream { get; init; }
    public bool IncludeUsage { get; init; }
    /// <summary>Thinking, template variables (chat only).</summary>
    public ChatPromptOptions? PromptOptions { get; init; }

    /// <summary>The parameters this server implements. Anything else — an OpenAI feature not built yet (tool_choice,
    /// top_logprobs, functions, ...) or a misspelling — is refused by name, never silently ignored, as OpenAI itself
    /// refuses unknown arguments. <c>user</c> is accepted and unused (it only labels the caller).</summary>
    private static readonly HashSet<string> Common =
    [
        "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
        "repetition_penalty", "seed", "logit_bias", "stop", "stream", "stream_options", "n", "user", "logprobs",
        "response_format", "speculative", "reasoning_budget",
    ];
    private static readonly HashSet<string> ChatOnly =
    [
        "messages", "max_completion_tokens", "top_logprobs", "reasoning_effort", "chat_template_kwargs", "thinking",
        "tools", "tool_choice", "parallel_tool_calls",
    ];

    private static IReadOnlyDictionary<string, int?> ReasoningEfforts => GenerationOptions.EffortBudgets;
    private static readonly HashSet<string> CompletionsOnly = ["prompt", "suffix"];

    /// <summary>Parses and checks a body; every problem is an <see cref="ApiError"/> naming the parameter.</summary>
    /// <param name="defaults">the server's defaults for what a request does not say</param>
    public static ChatRequest Parse(JsonElement body, bool chat, string servedModel, int vocabSize, RequestDefaults? defaults = null)
    {
        defaults ??= new RequestDefaults();
        Speculation speculation = defaults.Speculation;
        if (body.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest("the request body must be a JSON object");
        CheckText(body, "");
        foreach (JsonProperty p in body.EnumerateObject())
            if (!Common.Contains(p.Name) && !(chat ? ChatOnly : CompletionsOnly).Contains(p.Name))
                throw ApiError.BadRequest($"'{p.Name}' is not supported by this server's {(chat ? "/v1/chat/completions" : "/v1/completions")}", p.Name, "unsupported_parameter");
        if (Get(body, "model") is { } model)
        {
            if (model.ValueKind != JsonValueKind.String) throw ApiError.BadRequest("'model' must be a string", "model");
            if (model.GetString() != servedModel)
                throw new ApiError(404, $"The model '{model.GetString()}' does not exist; this server serves '{servedModel}'", "model", "model_not_found");
        }
        if (Int(body, "n") is { } n && n != 1) throw ApiError.BadRequest($"only n = 1 is supported, got {n}", "n");
        var (tools, toolChoice) = chat ? ParseTools(body) : (null, ToolChoice.Auto);
        int? topLogprobs = Logprobs(body, chat);
        OutputFormat? format = ResponseFormat(Get(body, "response_format"));
        int? reasoningBudget = defaults.ReasoningBudget;
        if (Get(body, "reasoning_effort") is { } effort)
            reasoningBudget = effort.ValueKind == JsonValueKind.String && ReasoningEfforts.TryGetValue(effort.GetString()!, out int? b) ? b
                : throw ApiError.BadRequest($"'reasoning_effort' must be one of {string.Join(", ", ReasoningEfforts.Keys)}", "reasoning_effort");
        if (Get(body, "thinking") is { ValueKind: JsonValueKind.Object } th && Int(th, "budget_tokens") is { } thinkingBudget) reasoningBudget = thinkingBudget;
        if (Int(body, "reasoning_budget") is { } budget) reasoningBudget = budget;
        ChatPromptOptions? promptOptions = chat ? ParsePromptOptions(body, defaults) : null;
        if (tools is not null && toolChoice != ToolChoice.None) promptOptions = (promptOptions ?? new()) with { Tools = tools };

        JsonElement messages = default;
        string? prompt = null;
        if (chat) messages = ValidateMessages(Get(body, "messages"));
        else prompt = ValidatePrompt(Get(body, "prompt"));
        string? suffix = chat ? null : Get(body, "suffix") switch
        {
            null => null,
            { ValueKind: JsonValueKind.String } sf => sf.GetString(),
            _ => throw ApiError.BadRequest("'suffix' must be a string", "suffix"),
        };

        int? maxTokens = Int(body, "max_completion_tokens") ?? Int(body, "max_tokens") ?? (chat ? null : 16);
        if (maxTokens is < 1) throw ApiError.BadRequest($"'max_tokens' must be ≥ 1, got {maxTokens}", "max_tokens");
        var sampling = new SamplingOptions
        {
            Temperature = Float(body, "temperature") ?? 1f,
            TopP = Float(body, "top_p") ?? 1f,
            TopK = Int(body, "top_k") is { } k && k > 0 ? k : 0,
            MinP = Float(body, "min_p") ?? 0f,
            PresencePenalty = Float(body, "presence_penalty") ?? 0f,
            FrequencyPenalty = Float(body, "frequency_penalty") ?? 0f,
            RepetitionPenalty = Float(body, "repetition_penalty") ?? 1f,
            Seed = Get(body, "seed") is { } seed ? (seed.ValueKind == JsonValueKind.Number && seed.TryGetInt64(out long s) ? unchecked((ulong)s) : throw ApiError.BadRequest("'seed' must be an integer", "seed")) : null,
            LogitBias = LogitBias(Get(body, "logit_bias")),
        };
        if (Get(body, "speculative") is { } spec)
            speculation = spec.ValueKind == JsonValueKind.String && spec.GetString() is "mtp" or "off"
                ? spec.GetString() == "mtp" ? Speculation.Mtp : Speculation.Off
                : throw ApiError.BadRequest("'speculative' must be \"mtp\" or \"off\"", "speculative");
        var options = new GenerationOptions
        {
            Sampling = sampling, MaxTokens = maxTokens, Stop = Stops(Get(body, "stop")), Speculation = speculation,
            Format = format, ReasoningBudget = reasoningBudget, TopLogprobs = topLogprobs,
            Tools = tools, ToolChoice = toolChoice, ParallelToolCalls = Bool(body, "parallel_tool_calls") ?? true,
        };
        try { options.Validate(vocabSize); }
        catch (ArgumentException e) { throw ApiError.BadRequest(FirstLine(e.Message), e.ParamName); }

        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = Get(body, "stream_options") is { } so && (so.ValueKind == JsonValueKind.Object ? Bool(so, "include_usage") ?? false
            : throw ApiError.BadRequest("'stream_options' must be an object", "stream_options"));
        return new ChatRequest { Options = options, Messages = messages, Prompt = prompt, Suffix = suffix, Stream = stream, IncludeUsage = includeUsage, PromptOptions = promptOptions };
    }

    /// <summary><c>tools</c> (functions: a name of letters, digits, _ and -, up to 64; an optional description; optional
    /// parameters, a JSON-schema object) and <c>tool_choice</c> ("none", "auto", "required" or
    /// <c>{"type": "function", "function": {"name": ...}}</c>). A choice that forces a call compiles the tools'
    /// parameter schemas for constrained decoding here, so a schema that cannot be enforced is a 400 naming it.</summary>
    private static (IReadOnlyList<ToolDefinition>? Tools, ToolChoice Choice) ParseTools(JsonElement body)
    {
        List<ToolDefinition>? tools = null;
        if (Get(body, "tools") is { } t)
        {
            if (t.ValueKind != JsonValueKind.Array) throw ApiError.BadRequest("'tools' must be an array", "tools");
            tools = [];
            int i = 0;
            foreach (JsonElement tool in t.EnumerateArray())
            {
                string where = $"tools[{i++}]";
                if (tool.ValueKind != JsonValueKind.Object || Get(tool, "type") is not { ValueKind: JsonValueKind.String } type || type.GetString() != "function")
                    throw ApiError.BadRequest($"'{where}' must be {{\"type\": \"function\", \"function\": {{...}}}}", $"{where}.type");
                if (Get(tool, "function") is not { ValueKind: JsonValueKind.Object } f)
                    throw ApiError.BadRequest($"'{where}.function' must be an object", $"{where}.function");
                string name = Get(f, "name") is { ValueKind: JsonValueKind.String } n && System.Text.RegularExpressions.Regex.IsMatch(n.GetString()!, "^[A-Za-z0-9_-]{1,64}$")
                    ? n.GetString()! : throw ApiError.BadRequest($"'{where}.function.name' must be 1-64 letters, digits, underscores or dashes", $"{where}.function.name");
                if (tools.Any(d => d.Name == name)) throw ApiError.BadRequest($"'{where}.function.name': '{name}' is defined twice", $"{where}.function.name");
                string? description = Get(f, "description") switch
                {
                    null => null,
                    { ValueKind: JsonValueKind.String } d => d.GetString(),
                    _ => throw ApiError.BadRequest($"'{where}.function.description' must be a string", $"{where}.function.description"),
                };
                JsonElement? parameters = Get(f, "parameters") switch
                {
                    null => null,
                    { ValueKind: JsonValueKind.Object } p => p.Clone(),
                    _ => throw ApiError.BadRequest($"'{where}.function.parameters' must be a JSON-schema object", $"{where}.function.parameters"),
                };
                tools.Add(new ToolDefinition(name, description, parameters));
            }
            if (tools.Count == 0) tools = null;
        }
        ToolChoice choice = Get(body, "tool_choice") switch
        {
            null => ToolChoice.Auto,
            { ValueKind: JsonValueKind.String } c when c.GetString() == "auto" => ToolChoice.Auto,
            { ValueKind: JsonValueKind.String } c when c.GetString() == "none" => ToolChoice.None,
            { ValueKind: JsonValueKind.String } c when c.GetString() == "required" => ToolChoice.Required,
            { ValueKind: JsonValueKind.Object } c when Get(c, "function") is { ValueKind: JsonValueKind.Object } f
                && Get(f, "name") is { ValueKind: JsonValueKind.String } n => ToolChoice.Function(n.GetString()!),
            _ => throw ApiError.BadRequest("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice"),
        };
        if (choice.ForcesCall && tools is null) throw ApiError.BadRequest($"'tool_choice' \"{choice.Mode}\" needs 'tools'", "tool_choice");
        if (choice.FunctionName is { } wanted && tools!.All(d => d.Name != wanted))
            throw ApiError.BadRequest($"'tool_choice' names the function '{wanted}', which is not in 'tools'", "tool_choice");
        if (choice.ForcesCall)
        {
            // Dummy token ids: only the schemas matter for whether the grammar can be built.
            try { ToolCalling.CallGrammar(tools!, new ToolTokens(0, 1, 2, 3, 4), ToolCallFormat.V3, choice.FunctionName); }
            catch (SchemaException e)
            {
                int index = tools!.FindIndex(d => e.Path == d.Name || e.Path.StartsWith(d.Name + "/", StringComparison.Ordinal));
                throw ApiError.BadRequest($"'tools[{index}].function.parameters': {e.Message}", $"tools[{index}].function.parameters", "invalid_schema");
            }
        }
        return (tools, choice);
    }

    /// <summary>Chat: <c>logprobs</c> true/false and <c>top_logprobs</c> 0–20 (which needs logprobs); completions: a
    /// <c>logprobs</c> count 0–20 (legacy OpenAI). Null = none.</summary>
    private static int? Logprobs(JsonElement body, bool chat)
    {
        if (!chat) return Int(body, "logprobs") is { } n ? n is >= 0 and <= GenerationOptions.MaxTopLogprobs ? n
            : throw ApiError.BadRequest($"'logprobs' must be in [0, {GenerationOptions.MaxTopLogprobs}], got {n}", "logprobs") : null;
        bool on = Bool(body, "logprobs") ?? false;
        int? top = Int(body, "top_logprobs");
        if (top is not null && !on) throw ApiError.BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs");
        if (top is < 0 or > GenerationOptions.MaxTopLogprobs)
            throw ApiError.BadRequest($"'top_logprobs' must be in [0, {GenerationOptions.MaxTopLogprobs}], got {top}", "top_logprobs");
        return on ? top ?? 0 : null;
    }

    /// <summary><c>{"type": "text"}</c>, <c>{"type": "json_object"}</c> (DeepSeek's JSON mode) or
    /// <c>{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}</c>.</summary>
    private static OutputFormat? ResponseFormat(JsonElement? rf)
    {
        if (rf is null) return null;
        string? type = rf.Value.ValueKind == JsonValueKind.Object && Get(rf.Value, "type") is { ValueKind: JsonValueKind.String } t ? t.GetString() : null;
        switch (type)
        {
            case "text": return null;
            case "json_object": return OutputFormat.JsonObject;
            case "json_schema":
                if (Get(rf.Value, "json_schema") is not { ValueKind: JsonValueKind.Object } js)
                    throw ApiError.BadRequest("'response_format.json_schema' must be an object with a 'schema'", "response_format.json_schema");
                if (Get(js, "schema") is not { } schema)
                    throw ApiError.BadRequest("'response_format.json_schema.schema' is required", "response_format.json_schema.schema");
                try { return OutputFormat.JsonSchema(schema); }
                catch (SchemaException e)
                {
                    throw ApiError.BadRequest($"'response_format.json_schema.schema': {e.Message}", "response_format.json_schema.schema", "invalid_schema");
                }
            default:
                throw ApiError.BadRequest("'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"", "response_format.type");
        }
    }

    /// <summary>Thinking on/off (<c>chat_template_kwargs.thinking</c> or <c>.enable_thinking</c> as vLLM and SGLang take
    /// it, or the <c>thinking: {"type": "enabled"|"disabled"}</c> object of Anthropic's API), other template variables,
    /// server defaults.</summary>
    private static ChatPromptOptions? ParsePromptOptions(JsonElement body, RequestDefaults defaults)
    {
        bool? thinking = defaults.Thinking;
        Dictionary<string, object?>? vars = null;
        if (Get(body, "chat_template_kwargs") is { } kw)
        {
            if (kw.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest("'chat_template_kwargs' must be an object", "chat_template_kwargs");
            vars = [];
            foreach (JsonProperty p in kw.EnumerateObject())
            {
                if (p.Name is "thinking" or "enable_thinking")
                {
                    thinking = p.Value.ValueKind switch
                    {
                        JsonValueKind.True => true,
                        JsonValueKind.False => false,
                        _ => throw ApiError.BadRequest($"'chat_template_kwargs.{p.Name}' must be true or false", $"chat_template_kwargs.{p.Name}"),
                    };
                    continue;
                }
                if (p.Name is "messages" or "tools" or "add_generation_prompt" or "bos_token" or "eos_token")
                    throw ApiError.BadRequest($"'chat_template_kwargs.{p.Name}' is set by the server", $"chat_template_kwargs.{p.Name}");
                vars[p.Name] = p.Value.Clone();
            }
        }
        if (Get(body, "thinking") is { } t)
            thinking = t.ValueKind == JsonValueKind.Object && Get(t, "type") is { ValueKind: JsonValueKind.String } tt && tt.GetString() is "enabled" or "disabled"
                ? tt.GetString() == "enabled"
                : throw ApiError.BadRequest("'thinking' must be {\"type\": \"enabled\"} (optionally with \"budget_tokens\") or {\"type\": \"disabled\"}", "thinking");
        return thinking is null && vars is null ? null : new ChatPromptOptions { Thinking = thinking, TemplateVariables = vars };
    }

    internal static string FirstLine(string message)
    {
        string m = message.Split('\n')[0];
        int p = m.LastIndexOf(" (Parameter '", StringComparison.Ordinal);
        return p > 0 ? m[..p] : m;
    }

    private static readonly string[] Roles = ["system", "developer", "user", "assistant", "tool"];

    /// <summary>Messages as the template expects them: content flattened to a string (text parts joined).</summary>
    private static JsonElement ValidateMessages(JsonElement? m)
    {
        if (m is not { ValueKind: JsonValueKind.Array } arr) throw ApiError.BadRequest("'messages' is required and must be an array", "messages");
        if (arr.GetArrayLength() == 0) throw ApiError.BadRequest("'messages' must not be empty", "messages");
        var result = new List<Dictionary<string, object?>>();
        int i = 0;
        foreach (JsonElement msg in arr.EnumerateArray())
        {
            string where = $"messages[{i++}]";
            if (msg.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest($"'{where}' must be an object", where);
            string? role = Get(msg, "role") is { ValueKind: JsonValueKind.String } r ? r.GetString() : null;
            if (role is null || !Roles.Contains(role))
                throw ApiError.BadRequest($"'{where}.role' must be one of {string.Join(", ", Roles)}", $"{where}.role");
            var copy = new Dictionary<string, object?> { ["role"] = role == "developer" ? "system" : role };
            JsonElement? content = Get(msg, "content");
            bool hasToolCalls = Get(msg, "tool_calls") is { ValueKind: JsonValueKind.Array };
            copy["content"] = content switch
            {
                null when role == "assistant" && hasToolCalls => null,
                { ValueKind: JsonValueKind.String } s => s.GetString(),
                { ValueKind: JsonValueKind.Array } parts => string.Concat(parts.EnumerateArray().Select(p =>
                    p.ValueKind == JsonValueKind.Object && Get(p, "type") is { ValueKind: JsonValueKind.String } type && type.GetString() == "text"
                        && Get(p, "text") is { ValueKind: JsonValueKind.String } t
                        ? t.GetString()
                        : throw ApiError.BadRequest($"'{where}.content' parts must be {{\"type\": \"text\", \"text\": ...}}", $"{where}.content"))),
                _ => throw ApiError.BadRequest($"'{where}.content' must be a string or an array of text parts", $"{where}.content"),
            };
            if (hasToolCalls) copy["tool_calls"] = msg.GetProperty("tool_calls").Clone();
            if (role == "tool" && Get(msg, "tool_call_id") is { ValueKind: JsonValueKind.String } callId) copy["tool_call_id"] = callId.GetString();
            if (Get(msg, "prefix") is { } prefix)
            {
                if (prefix.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw ApiError.BadRequest($"'{where}.prefix' must be true or false", $"{where}.prefix");
                if (prefix.ValueKind == JsonValueKind.True && (role != "assistant" || i != arr.GetArrayLength()))
                    throw ApiError.BadRequest($"'{where}.prefix' may only mark the last message, an assistant's, to be continued", $"{where}.prefix");
                copy["prefix"] = prefix.ValueKind == JsonValueKind.True;
                if (Get(msg, "reasoning_content") is { ValueKind: JsonValueKind.String } rc) copy["reasoning_content"] = rc.GetString();
            }
            result.Add(copy);
        }
        return JsonSerializer.SerializeToElement(result);
    }

    private static string ValidatePrompt(JsonElement? p) => p switch
    {
        { ValueKind: JsonValueKind.String } s when s.GetString()!.Length > 0 => s.GetString()!,
        { ValueKind: JsonValueKind.Array } a when a.GetArrayLength() == 1 && a[0].ValueKind == JsonValueKind.String => a[0].GetString()!,
        { ValueKind: JsonValueKind.String } => throw ApiError.BadRequest("'prompt' must not be empty", "prompt"),
        _ => throw ApiError.BadRequest("'prompt' is required and must be a string", "prompt"),
    };

    private static IReadOnlyList<string> Stops(JsonElement? s)
    {
        if (s is null) return [];
        string[] stops = s.Value.ValueKind switch
        {
            JsonValueKind.String => [s.Value.GetString()!],
            JsonValueKind.Array => s.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw ApiError.BadRequest("'stop' must hold strings", "stop")).ToArray(),
            _ => throw ApiError.BadRequest("'stop' must be a string or an array of strings", "stop"),
        };
        if (stops.Length > 4) throw ApiError.BadRequest($"'stop' holds {stops.Length} strings; at most 4", "stop");
        return stops;
    }

    private static IReadOnlyDictionary<int, float>? LogitBias(JsonElement? b)
    {
        if (b is null) return null;
        if (b.Value.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest("'logit_bias' must be an object of token id → bias", "logit_bias");
        var d = new Dictionary<int, float>();
        foreach (JsonProperty p in b.Value.EnumerateObject())
        {
            if (!int.TryParse(p.Name, out int id) || p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetSingle(out float bias) || !float.IsFinite(bias))
                throw ApiError.BadRequest($"'logit_bias' entry '{p.Name}' must map a token id to a number", "logit_bias");
            d[id] = bias;
        }
        return d;
    }

    /// <summary>Every string and property name must be valid Unicode. System.Text.Json accepts a lone surrogate escape
    /// (<c>"\ud800"</c>) or invalid UTF-8 bytes while parsing and only fails when the string is read, so the whole
    /// body is read once here and the first bad string is named.</summary>
    private static void CheckText(JsonElement e, string path)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (JsonProperty p in e.EnumerateObject())
                {
                    string name = Read(() => p.Name, path.Length == 0 ? "a property name" : $"a property name in '{path}'", path);
                    CheckText(p.Value, path.Length == 0 ? name : $"{path}.{name}");
                }
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (JsonElement item in e.EnumerateArray()) CheckText(item, $"{path}[{i++}]");
                break;
            case JsonValueKind.String:
                Read(e.GetString, $"'{path}'", path);
                break;
        }
    }

    private static string Read(Func<string?> read, string what, string path)
    {
        try { return read()!; }
        catch (Exception x) when (x is InvalidOperationException or ArgumentException) // DecoderFallbackException is an ArgumentException
        {
            throw ApiError.BadRequest($"{what} is not valid Unicode text (a lone surrogate, or bytes that are not UTF-8)", path.Length == 0 ? null : path);
        }
    }

    private static JsonElement? Get(JsonElement o, string name) =>
        o.TryGetProperty(name, out JsonElement v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static int? Int(JsonElement o, string name) => Get(o, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } v when v.TryGetInt32(out int i) => i,
        _ => throw ApiError.BadRequest($"'{name}' must be an integer", name),
    };

    private static float? Float(JsonElement o, string name) => Get(o, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } v when v.TryGetSingle(out float f) && float.IsFinite(f) => f,
        _ => throw ApiError.BadRequest($"'{name}' must be a number", name),
    };

    private static bool? Bool(JsonElement o, string name) => Get(o, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        _ => throw ApiError.BadRequest($"'{name}' must be true or false", name),
    };
}
