using System.Text.Json;

namespace DeepSeekSharp.Text;

/// <summary>What matters of tokenizer_config.json: BOS/EOS strings, add_bos_token, the chat template.</summary>
public sealed record TokenizerConfig
{
    public string? BosToken { get; init; }
    public string? EosToken { get; init; }
    public string? PadToken { get; init; }
    public bool AddBosToken { get; init; }
    public bool AddEosToken { get; init; }
    public string? ChatTemplate { get; init; }

    public static TokenizerConfig Load(string directory)
    {
        string path = Path.Combine(directory, "tokenizer_config.json");
        if (!File.Exists(path)) return new TokenizerConfig();
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return Parse(doc.RootElement);
    }

    /// <summary>Reads a parsed tokenizer_config.json; a member of the wrong JSON type or invalid text is an
    /// <see cref="InvalidDataException"/>.</summary>
    public static TokenizerConfig Parse(JsonElement r) => Formats.JsonShape.Read("tokenizer_config.json", () => ParseCore(r));

    private static TokenizerConfig ParseCore(JsonElement r)
    {
        static string? TokenString(JsonElement r, string name) =>
            !r.TryGetProperty(name, out JsonElement v) ? null
            : v.ValueKind == JsonValueKind.String ? v.GetString()
            : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out JsonElement c) ? c.GetString()
            : null;
        static bool Flag(JsonElement r, string name) =>
            r.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.True;

        string? template = null;
        if (r.TryGetProperty("chat_template", out JsonElement t))
        {
            if (t.ValueKind == JsonValueKind.String) template = t.GetString();
            else if (t.ValueKind == JsonValueKind.Array) // [{"name": "default", "template": "..."}, ...]
                template = t.EnumerateArray().Where(e => e.TryGetProperty("name", out JsonElement n) && n.GetString() == "default")
                    .Select(e => e.GetProperty("template").GetString()).FirstOrDefault();
        }
        return new TokenizerConfig
        {
            BosToken = TokenString(r, "bos_token"),
            EosToken = TokenString(r, "eos_token"),
            PadToken = TokenString(r, "pad_token"),
            AddBosToken = Flag(r, "add_bos_token"),
            AddEosToken = Flag(r, "add_eos_token"),
            ChatTemplate = template,
        };
    }
}
