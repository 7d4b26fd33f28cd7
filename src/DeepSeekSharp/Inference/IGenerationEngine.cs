using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Inference;

/// <summary>What the front doors (CLI, HTTP server, IChatClient) need from an engine: a tokenizer and template to
/// build prompts, and a stream of updates for a prompt. <see cref="Generator"/> runs one sequence;
/// <see cref="BatchScheduler"/> runs many together.</summary>
public interface IGenerationEngine
{
    DeepSeekModel Model { get; }
    Tokenizer Tokenizer { get; }
    ChatTemplate? Template { get; }
    int ContextLength { get; }

    IAsyncEnumerable<GenerationUpdate> GenerateAsync(int[] promptIds, bool startsInReasoning, GenerationOptions? options = null,
        CancellationToken cancellationToken = default);
}

public static class GenerationEngineExtensions
{
    /// <summary>Checks that <paramref name="tokenizer"/> fits <paramref name="model"/> and parses its chat template
    /// (null when tokenizer_config.json has none): what every engine does when it is built.</summary>
    internal static ChatTemplate? TemplateFor(DeepSeekModel model, Tokenizer tokenizer)
    {
        if (tokenizer.VocabSize > model.Config.VocabSize)
            throw new ArgumentException($"the tokenizer has {tokenizer.VocabSize} token ids but the model's vocab_size is {model.Config.VocabSize}", nameof(tokenizer));
        return tokenizer.Config.ChatTemplate is { } t ? ChatTemplate.Parse(t) : null;
    }

    /// <summary>Renders OpenAI-style messages (a JSON array) with the model's chat template.</summary>
    public static string RenderChat(this IGenerationEngine engine, System.Text.Json.JsonElement messages, bool addGenerationPrompt = true,
        ChatPromptOptions? options = null)
    {
        if (engine.Template is null) throw new InvalidOperationException("the tokenizer_config.json has no chat_template; use a raw prompt");
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (options?.TemplateVariables is { } extra) foreach (var (k, v) in extra) vars[k] = v;
        if (options?.Tools is { Count: > 0 } tools)
        {
            vars["tools"] = tools.Select(t => t.ToOpenAi()).ToList();
            if (!engine.Template.Source.Contains("tools", StringComparison.Ordinal))
                messages = WithSystem(messages, Tools.ToolCalling.Describe(tools, Tools.ToolCalling.FormatOf(engine.Template.Source)));
        }
        if (options?.Thinking is { } thinking)
        {
            vars["thinking"] = thinking;          // DeepSeek-V3.1's flag
            vars["enable_thinking"] = thinking;   // the name other templates use
        }
        // Chat prefix completion (DeepSeek's beta): a last assistant message with "prefix": true is continued, not closed.
        System.Text.Json.JsonElement? prefix = null;
        if (messages.ValueKind == System.Text.Json.JsonValueKind.Array && messages.GetArrayLength() > 0 && IsPrefix(messages[messages.GetArrayLength() - 1]))
        {
            prefix = messages[messages.GetArrayLength() - 1];
            messages = System.Text.Json.JsonSerializer.SerializeToElement(messages.EnumerateArray().SkipLast(1));
            addGenerationPrompt = true;
        }
        string prompt = engine.Template.Render(messages, addGenerationPrompt, engine.Tokenizer.Config.BosToken, engine.Tokenizer.Config.EosToken, vars);
        prompt = Thinking(engine, prompt, addGenerationPrompt, options);
        return prefix is { } p ? ContinuePrefix(prompt, p) : prompt;
    }

    /// <summary>The messages with one more system message after the leading ones.</summary>
    private static System.Text.Json.JsonElement WithSystem(System.Text.Json.JsonElement messages, string text)
    {
        var list = messages.EnumerateArray().Select(m => (object)m).ToList();
        int at = 0;
        while (at < list.Count && ((System.Text.Json.JsonElement)list[at]).TryGetProperty("role", out var r) && r.ValueKind == System.Text.Json.JsonValueKind.String && r.GetString() == "system") at++;
        list.Insert(at, new Dictionary<string, string> { ["role"] = "system", ["content"] = text });
        return System.Text.Json.JsonSerializer.SerializeToElement(list);
    }

    private static bool IsPrefix(System.Text.Json.JsonElement m) =>
        m.ValueKind == System.Text.Json.JsonValueKind.Object
        && m.TryGetProperty("role", out var role) && role.ValueKind == System.Text.Json.JsonValueKind.String && role.GetString() == "assistant"
        && m.TryGetProperty("prefix", out var p) && p.ValueKind == System.Text.Json.JsonValueKind.True;

    /// <summary>Appends an assistant prefix to a prompt that ends where the assistant's turn begins: its
    /// <c>reasoning_content</c> continues an open reasoning (closed when there is content too); content alone closes
    /// an open reasoning first, so it is continued as the answer.</summary>
    private static string ContinuePrefix(string prompt, System.Text.Json.JsonElement message)
    {
        string content = message.TryGetProperty("content", out var c) && c.ValueKind == System.Text.Json.JsonValueKind.String ? c.GetString()! : "";
        string? reasoning = message.TryGetProperty("reasoning_content", out var r) && r.ValueKind == System.Text.Json.JsonValueKind.String ? r.GetString() : null;
        bool open = Generator.PromptEndsInReasoning(prompt);
        if (reasoning is not null && open)
            return content.Length == 0 ? prompt + reasoning : prompt + reasoning + ReplyStream.CloseReasoningText + content;
        return open ? prompt + ReasoningParser.CloseTag + "\n\n" + content : prompt + content;
    }

    /// <summary>Thinking on or off where the template leaves it to the prompt's end (see <see cref="ChatPromptOptions.Thinking"/>).</summary>
    private static string Thinking(IGenerationEngine engine, string prompt, bool addGenerationPrompt, ChatPromptOptions? options)
    {
        if (!addGenerationPrompt) return prompt;
        string source = engine.Template!.Source;
        bool thinks = source.Contains(ReasoningParser.OpenTag, StringComparison.Ordinal);
        // An R1 template (it knows the tags but has no thinking switch) that leaves the reply open: the reasoning is
        // opened for the model, as DeepSeek advises (R1 otherwise sometimes skips it) — unless thinking is off.
        bool r1Open = source.Contains(ReasoningParser.CloseTag, StringComparison.Ordinal)
            && !System.Text.RegularExpressions.Regex.IsMatch(source, @"\b(enable_)?thinking\b")
            && prompt.EndsWith("<｜Assistant｜>", StringComparison.Ordinal);
        if (options?.Thinking is not { } on) return r1Open ? prompt + ReasoningParser.OpenTag + "\n" : prompt;
        if (r1Open) prompt += ReasoningParser.OpenTag + "\n";
        bool open = Generator.PromptEndsInReasoning(prompt);
        // R1's template opens the reasoning itself; "off" closes it at once (R1's own empty reasoning), "on" opens it
        // where a template that knows the tags left it to the model.
        if (!on && open) return prompt + ReasoningParser.CloseTag + "\n\n";
        if (on && !open && thinks && !prompt.TrimEnd().EndsWith(ReasoningParser.CloseTag, StringComparison.Ordinal)) return prompt + ReasoningParser.OpenTag + "\n";
        return prompt;
    }

    /// <summary>A conversation (OpenAI-style messages as a JSON array) rendered with the chat template and tokenised.</summary>
    public static PromptTokens ChatPrompt(this IGenerationEngine engine, System.Text.Json.JsonElement messages, int maxTokens = int.MaxValue,
        ChatPromptOptions? options = null)
    {
        string prompt = engine.RenderChat(messages, options: options);
        return new(engine.Tokenizer.Encode(prompt, addBos: false, maxTokens), Generator.PromptEndsInReasoning(prompt)); // the render starts with BOS
    }

    /// <summary>Fill in the middle (DeepSeek's FIM format, as its coder models and <c>/beta/completions</c> take it):
    /// <c>&lt;｜fim▁begin｜&gt;prefix&lt;｜fim▁hole｜&gt;suffix&lt;｜fim▁end｜&gt;</c>, BOS as tokenizer_config.json says; the
    /// model writes what goes in the hole.</summary>
    /// <exception cref="NotSupportedException">the tokenizer has no FIM tokens</exception>
    public static PromptTokens FimPrompt(this IGenerationEngine engine, string prefix, string suffix, int maxTokens = int.MaxValue)
    {
        foreach (string t in (string[])[FimBegin, FimHole, FimEnd])
            if (engine.Tokenizer.TryTokenToId(t) is null)
                throw new NotSupportedException($"the model's tokenizer has no FIM token '{t}', so it cannot fill in the middle");
        return new(engine.Tokenizer.Encode(FimBegin + prefix + FimHole + suffix + FimEnd, maxTokens: maxTokens), false);
    }

    public const string FimBegin = "<｜fim▁begin｜>", FimHole = "<｜fim▁hole｜>", FimEnd = "<｜fim▁end｜>";

    /// <summary>A raw prompt (no template; BOS as tokenizer_config.json says) tokenised.</summary>
    public static PromptTokens RawPrompt(this IGenerationEngine engine, string prompt, int maxTokens = int.MaxValue) =>
        new(engine.Tokenizer.Encode(prompt, maxTokens: maxTokens), Generator.PromptEndsInReasoning(prompt));

    /// <summary>Generates from a tokenised prompt.</summary>
    public static IAsyncEnumerable<GenerationUpdate> GenerateAsync(this IGenerationEngine engine, PromptTokens prompt,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        engine.GenerateAsync(prompt.Ids, prompt.StartsInReasoning, options, cancellationToken);

    /// <summary>Generates a reply to a conversation (OpenAI-style messages as a JSON array). A reasoning budget too
    /// small to close the reasoning in (0, say) switches thinking off unless <paramref name="prompt"/> says otherwise.</summary>
    public static IAsyncEnumerable<GenerationUpdate> ChatAsync(this IGenerationEngine engine, System.Text.Json.JsonElement messages,
        GenerationOptions? options = null, CancellationToken cancellationToken = default, ChatPromptOptions? prompt = null) =>
        engine.GenerateAsync(engine.ChatPrompt(messages, options: ChatPromptOptions.For(prompt, options, engine.Tokenizer)), options, cancellationToken);

    /// <summary>Continues a raw prompt.</summary>
    public static IAsyncEnumerable<GenerationUpdate> CompleteAsync(this IGenerationEngine engine, string prompt,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        engine.GenerateAsync(engine.RawPrompt(prompt), options, cancellationToken);
}

/// <summary>How a conversation becomes a prompt beyond its messages.</summary>
public sealed record ChatPromptOptions
{
    /// <summary>Thinking on or off for models that reason first: passed to the template as <c>thinking</c> (DeepSeek-V3.1)
    /// and <c>enable_thinking</c>; for R1's template, off closes the reasoning in the prompt and on makes sure it is
    /// open. Null = the template's default.</summary>
    public bool? Thinking { get; init; }
    /// <summary>Tools the model may call: passed to the template as <c>tools</c> (OpenAI's shape); templates that do not
    /// render them (DeepSeek's own) get a system message describing them and the call format.</summary>
    public IReadOnlyList<Tools.ToolDefinition>? Tools { get; init; }
    /// <summary>More template variables (vLLM's and SGLang's <c>chat_template_kwargs</c>).</summary>
    public IReadOnlyDictionary<string, object?>? TemplateVariables { get; init; }

    /// <summary><paramref name="prompt"/>, with thinking off when the generation's reasoning budget is too small to
    /// hold even the closing tag (0, say) and the prompt options do not decide it.</summary>
    public static ChatPromptOptions? For(ChatPromptOptions? prompt, GenerationOptions? generation, Tokenizer tokenizer) =>
        generation?.ReasoningBudget is { } budget && prompt?.Thinking is null
        && budget < tokenizer.Encode(ReplyStream.CloseReasoningText, addBos: false).Length
            ? (prompt ?? new()) with { Thinking = false }
            : prompt;
}

/// <summary>A prompt's token ids, and whether generation starts inside the reasoning (the prompt ends in an open
/// <c>&lt;think&gt;</c>, as R1's template leaves it).</summary>
public readonly record struct PromptTokens(int[] Ids, bool StartsInReasoning);
