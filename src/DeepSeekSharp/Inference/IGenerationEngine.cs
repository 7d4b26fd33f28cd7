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
    public static string RenderChat(this IGenerationEngine engine, System.Text.Json.JsonElement messages, bool addGenerationPrompt = true)
    {
        if (engine.Template is null) throw new InvalidOperationException("the tokenizer_config.json has no chat_template; use a raw prompt");
        return engine.Template.Render(messages, addGenerationPrompt, engine.Tokenizer.Config.BosToken, engine.Tokenizer.Config.EosToken);
    }

    /// <summary>A conversation (OpenAI-style messages as a JSON array) rendered with the chat template and tokenised.</summary>
    public static PromptTokens ChatPrompt(this IGenerationEngine engine, System.Text.Json.JsonElement messages, int maxTokens = int.MaxValue)
    {
        string prompt = engine.RenderChat(messages);
        return new(engine.Tokenizer.Encode(prompt, addBos: false, maxTokens), Generator.PromptEndsInReasoning(prompt)); // the render starts with BOS
    }

    /// <summary>A raw prompt (no template; BOS as tokenizer_config.json says) tokenised.</summary>
    public static PromptTokens RawPrompt(this IGenerationEngine engine, string prompt, int maxTokens = int.MaxValue) =>
        new(engine.Tokenizer.Encode(prompt, maxTokens: maxTokens), Generator.PromptEndsInReasoning(prompt));

    /// <summary>Generates from a tokenised prompt.</summary>
    public static IAsyncEnumerable<GenerationUpdate> GenerateAsync(this IGenerationEngine engine, PromptTokens prompt,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        engine.GenerateAsync(prompt.Ids, prompt.StartsInReasoning, options, cancellationToken);

    /// <summary>Generates a reply to a conversation (OpenAI-style messages as a JSON array).</summary>
    public static IAsyncEnumerable<GenerationUpdate> ChatAsync(this IGenerationEngine engine, System.Text.Json.JsonElement messages,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        engine.GenerateAsync(engine.ChatPrompt(messages), options, cancellationToken);

    /// <summary>Continues a raw prompt.</summary>
    public static IAsyncEnumerable<GenerationUpdate> CompleteAsync(this IGenerationEngine engine, string prompt,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        engine.GenerateAsync(engine.RawPrompt(prompt), options, cancellationToken);
}

/// <summary>A prompt's token ids, and whether generation starts inside the reasoning (the prompt ends in an open
/// <c>&lt;think&gt;</c>, as R1's template leaves it).</summary>
public readonly record struct PromptTokens(int[] Ids, bool StartsInReasoning);
