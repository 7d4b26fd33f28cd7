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

    /// <summary>Generates a reply to a conversation (OpenAI-style messages as a JSON array).</summary>
    public static IAsyncEnumerable<GenerationUpdate> ChatAsync(this IGenerationEngine engine, System.Text.Json.JsonElement messages,
        GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        string prompt = engine.RenderChat(messages);
        // The rendered chat already starts with BOS.
        return engine.GenerateAsync(engine.Tokenizer.Encode(prompt, addBos: false), Generator.PromptEndsInReasoning(prompt), options, cancellationToken);
    }

    /// <summary>Continues a raw prompt (no template; BOS as tokenizer_config.json says).</summary>
    public static IAsyncEnumerable<GenerationUpdate> CompleteAsync(this IGenerationEngine engine, string prompt,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        engine.GenerateAsync(engine.Tokenizer.Encode(prompt), Generator.PromptEndsInReasoning(prompt), options, cancellationToken);
}
