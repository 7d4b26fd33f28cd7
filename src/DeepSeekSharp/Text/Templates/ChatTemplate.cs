using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Text.Templates;

/// <summary>A Hugging Face chat template (the Jinja subset real DeepSeek templates use), rendered the way
/// transformers' <c>apply_chat_template</c> does: trim_blocks and lstrip_blocks on, <c>messages</c>,
/// <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c> and any extra variables in scope.</summary>
public sealed class ChatTemplate
{
    private readonly List<Node> _nodes;

    private ChatTemplate(string source, List<Node> nodes)
    {
        Source = source;
        _nodes = nodes;
    }

    public string Source { get; }

    /// <exception cref="TemplateException">the template does not parse</exception>
    public static ChatTemplate Parse(string source) => new(source, TemplateParser.Parse(source));

    /// <summary>Renders with variables given as JSON-like values (string, bool, long, double, null, lists,
    /// dictionaries, or JsonElement).</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var scope = new Scope(null);
        foreach (var (k, v) in variables) scope.Set(k, FromClr(v));
        var sb = new StringBuilder();
        Node.RenderAll(_nodes, scope, sb);
        return sb.ToString();
    }

    /// <summary>Renders a conversation given as a JSON array of OpenAI-style messages.</summary>
    public string Render(JsonElement messages, bool addGenerationPrompt, string? bosToken, string? eosToken,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bosToken ?? "",
            ["eos_token"] = eosToken ?? "",
        };
        if (extra is not null) foreach (var (k, v) in extra) vars[k] = v;
        return Render(vars);
    }

    /// <summary>Converts CLR and JSON values to template values.</summary>
    internal static object? FromClr(object? v) => v switch
    {
        null => null,
        string or bool or long or double => v,
        int i => (long)i,
        float f => (double)f,
        JsonElement e => FromJson(e),
        IReadOnlyDictionary<string, object?> d => d.ToDictionary(p => p.Key, p => FromClr(p.Value), StringComparer.Ordinal),
        System.Collections.IEnumerable list => list.Cast<object?>().Select(FromClr).ToList(),
        _ => v.ToString(),
    };

    internal static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal), (d, p) => { d[p.Name] = FromJson(p.Value); return d; }),
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };
}
