using System.Runtime.CompilerServices;
using System.Text.Json;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Inference.Constraints;

/// <summary>What a reply's answer must be, enforced token by token by constrained decoding (the reasoning of a model
/// that thinks first is free; the constraint starts after <c>&lt;/think&gt;</c>). Grammars compiled for a tokenizer
/// are shared by every request that asks for the same format, with the tokens each state allows.</summary>
public sealed class OutputFormat
{
    private static readonly ConditionalWeakTable<Tokenizer, Dictionary<string, TokenGrammar>> Bound = new();
    private const int MaxBoundPerTokenizer = 16;  // grammars kept per tokenizer, each with up to 8 MB of cached masks

    private readonly Grammar _grammar;
    private readonly string? _key;

    private OutputFormat(Grammar grammar, string? key, string description)
    {
        _grammar = grammar;
        _key = key;
        Description = description;
    }

    /// <summary>Any JSON object (DeepSeek's JSON mode; OpenAI's <c>{"type": "json_object"}</c>).</summary>
    public static OutputFormat JsonObject { get; } = new(JsonGrammar.AnyObject(), "json_object", "a JSON object");

    /// <summary>A value the JSON schema accepts (OpenAI's structured outputs).</summary>
    /// <exception cref="SchemaException">the schema uses what constrained decoding cannot enforce</exception>
    public static OutputFormat JsonSchema(JsonElement schema) =>
        new(JsonGrammar.FromSchema(schema), "json_schema:" + schema.GetRawText(), "JSON matching the schema");

    /// <summary>Any grammar of one's own (not shared between requests).</summary>
    public static OutputFormat FromGrammar(Grammar grammar, string description = "the grammar") => new(grammar, null, description);

    public Grammar Grammar => _grammar;
    public string Description { get; }

    /// <summary>The grammar bound to a tokenizer's vocabulary: shared for shared formats.</summary>
    internal TokenGrammar Bind(Tokenizer tokenizer, int modelVocab, IEnumerable<int> eos)
    {
        int[] ends = eos.Distinct().Order().ToArray();
        if (_key is null) return new TokenGrammar(_grammar, tokenizer, modelVocab, ends);
        string key = $"{modelVocab}:{string.Join(',', ends)}:{_key}";
        Dictionary<string, TokenGrammar> bound = Bound.GetValue(tokenizer, _ => []);
        lock (bound)
        {
            if (bound.TryGetValue(key, out TokenGrammar? g)) return g;
            if (bound.Count >= MaxBoundPerTokenizer) bound.Clear();
            return bound[key] = new TokenGrammar(_grammar, tokenizer, modelVocab, ends);
        }
    }
}
