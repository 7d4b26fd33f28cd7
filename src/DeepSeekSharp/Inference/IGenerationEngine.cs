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
        if (options?.Tools is { } tools) vars["tools"] = tools;
        if (options?.Thinking is { } thinking)
        {
            vars["thinking"] = thinking;          // DeepSeek-V3.1's flag
            vars["enable_thinking"] = thinking;   // the name other templates use
        }
        string prompt = engine.Template.Render(messages, addGenerationPrompt, engine.Tokenizer.Config.BosToken, engine.Tokenizer.Config.EosToken, vars);
        if (!addGenerationPrompt || options?.Thinking is not { } on) return prompt;
        bool thinks = engine.Template.Source.Contains(ReasoningParser.OpenTag, StringComparison.Ordinal);
        bool open = Generator.PromptEndsInReasoning(prompt);
        // R1's template opens the reasoning itself; "off" closes it at once (R1's own empty reasoning), "on" opens it
        // where a template that knows the tags left it to the model (R1 otherwise sometimes skips its reasoning).
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
    /// <summary>Tool definitions (OpenAI's <c>tools</c> array) for templates that describe tools in the prompt.</summary>
    public System.Text.Json.JsonElement? Tools { get; init; }
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
