using System.Text.Json;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Training.Data;

/// <summary>Turns text into a <see cref="TokenShard"/>: plain text files (documents separated by blank lines) and
/// JSONL files whose lines hold <c>{"text": ...}</c> (every token a target), <c>{"prompt": ..., "completion": ...}</c>
/// (raw text; only the completion is a target) or <c>{"messages": [...]}</c> rendered with the model's chat template,
/// where only the assistant turns are targets. Every document starts with
/// BOS (when the tokenizer has one and the text does not already) and ends with EOS.</summary>
public sealed class DataPreparation(Tokenizer tokenizer)
{
    private readonly List<int> _tokens = [];
    private readonly List<byte> _mask = [];
    private ChatTemplate? _template;

    public long Documents { get; private set; }
    public int TokenCount => _tokens.Count;
    public int TargetCount => _mask.Count(m => m == 1);

    /// <summary>Adds every document of a .txt, .jsonl or .json-lines file.</summary>
    public void AddFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"input '{path}' does not exist");
        if (path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
        {
            int line = 0;
            foreach (string text in File.ReadLines(path))
            {
                line++;
                if (string.IsNullOrWhiteSpace(text)) continue;
                AddJsonLine(text, $"{path}:{line}");
            }
            return;
        }
        string all = File.ReadAllText(path).Replace("\r\n", "\n");
        foreach (string doc in all.Split("\n\n", StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            AddText(doc);
    }

    private void AddJsonLine(string json, string where)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new InvalidDataException($"{where}: not valid JSON: {e.Message}"); }
        using (doc)
        {
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{where}: each line must be a JSON object with \"text\" or \"messages\"");
            if (root.TryGetProperty("text", out JsonElement text) && text.ValueKind == JsonValueKind.String) AddText(text.GetString()!);
            else if (root.TryGetProperty("prompt", out JsonElement prompt) && prompt.ValueKind == JsonValueKind.String
                     && root.TryGetProperty("completion", out JsonElement completion) && completion.ValueKind == JsonValueKind.String)
                AddPromptCompletion(prompt.GetString()!, completion.GetString()!);
            else if (root.TryGetProperty("messages", out JsonElement messages) && messages.ValueKind == JsonValueKind.Array) AddChat(messages, where);
            else throw new InvalidDataException($"{where}: no \"text\" string, \"prompt\" and \"completion\" strings, or \"messages\" array");
        }
    }

    /// <summary>One document whose every token is a target.</summary>
    public void AddText(string text)
    {
        if (text.Length == 0) return;
        Begin(text);
        Append(tokenizer.Encode(text, addBos: false), 1);
        End();
    }

    /// <summary>One document of raw text in two parts: the prompt is context, the completion is learnt (for examples
    /// already in a template's form, such as R1's <c>…&lt;｜Assistant｜&gt;&lt;think&gt;\n</c> prompt).</summary>
    public void AddPromptCompletion(string prompt, string completion)
    {
        if (completion.Length == 0) throw new InvalidDataException("an empty completion has nothing to learn");
        Begin(prompt + completion);
        Append(tokenizer.Encode(prompt, addBos: false), 0);
        Append(tokenizer.Encode(completion, addBos: false), 1);
        End(alreadyEnded: tokenizer.Config.EosToken is { Length: > 0 } eos && completion.EndsWith(eos, StringComparison.Ordinal));
    }

    /// <summary>One conversation rendered with the chat template; the loss covers each assistant turn (from after the
    /// template's assistant prefix through its end-of-turn token).</summary>
    public void AddChat(JsonElement messages, string where = "messages")
    {
        _template ??= tokenizer.Config.ChatTemplate is { } t ? ChatTemplate.Parse(t)
            : throw new InvalidDataException($"{where}: chat messages need a chat template, and the tokenizer has none (tokenizer_config.json chat_template)");
        JsonElement[] all = [.. messages.EnumerateArray()];
        if (all.Length == 0) throw new InvalidDataException($"{where}: \"messages\" is empty");
        string bos = tokenizer.Config.BosToken ?? "", eos = tokenizer.Config.EosToken ?? "";
        string full = _template.Render(JsonSerializer.SerializeToElement(all), false, bos, eos);
        // Spans [start, end) of the full text that are assistant output.
        var spans = new List<(int Start, int End)>();
        for (int i = 0; i < all.Length; i++)
        {
            if (!all[i].TryGetProperty("role", out JsonElement role) || role.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{where}: message {i} has no \"role\" string");
            if (role.GetString() != "assistant") continue;
            string before = _template.Render(JsonSerializer.SerializeToElement(all[..i]), true, bos, eos);
            string through = _template.Render(JsonSerializer.SerializeToElement(all[..(i + 1)]), false, bos, eos);
            if (!full.StartsWith(before, StringComparison.Ordinal) || !through.StartsWith(before, StringComparison.Ordinal))
                throw new InvalidDataException($"{where}: the chat template's prompt for assistant message {i} is not how it renders that message, so the turn " +
                    "cannot be located for the loss mask (R1's template, for one, opens the prompt with <think> but drops everything up to </think> " +
                    "from assistant turns); give such examples as {\"text\": ...} already in the template's form");
            int end = CommonPrefix(full, through);
            // A template may drop part of a message (R1's removes everything up to </think> from assistant turns):
            // learning from what is left would silently lose the reasoning, so say so instead.
            if (all[i].TryGetProperty("content", out JsonElement content) && content.ValueKind == JsonValueKind.String &&
                !full.AsSpan(before.Length, end - before.Length).Contains(content.GetString()!.Trim(), StringComparison.Ordinal))
                throw new InvalidDataException($"{where}: the chat template does not render assistant message {i} whole (R1's template drops " +
                    "everything up to </think>); give reasoning examples as {\"text\": ...} already in the template's form, or use a template that keeps them");
            if (end > before.Length) spans.Add((before.Length, end));
        }
        if (spans.Count == 0) throw new InvalidDataException($"{where}: no assistant message to learn from");
        Begin(full);
        int at = 0;
        foreach (var (start, end) in spans)
        {
            if (start > at) Append(tokenizer.Encode(full[at..start], addBos: false), 0);
            Append(tokenizer.Encode(full[start..end], addBos: false), 1);
            at = end;
        }
        if (at < full.Length) Append(tokenizer.Encode(full[at..], addBos: false), 0);
        End(alreadyEnded: full.EndsWith(eos, StringComparison.Ordinal) && eos.Length > 0);
    }

    private static int CommonPrefix(string a, string b)
    {
        int n = Math.Min(a.Length, b.Length), i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }

    private void Begin(string text)
    {
        if (tokenizer.BosId is { } bos && !(tokenizer.Config.BosToken is { Length: > 0 } b && text.StartsWith(b, StringComparison.Ordinal)))
        {
            _tokens.Add(bos);
            _mask.Add(0);
        }
    }

    private void End(bool alreadyEnded = false)
    {
        if (!alreadyEnded && tokenizer.EosId is { } eos)
        {
            _tokens.Add(eos);
            _mask.Add(1);
        }
        Documents++;
    }

    private void Append(int[] ids, byte mask)
    {
        _tokens.AddRange(ids);
        for (int i = 0; i < ids.Length; i++) _mask.Add(mask);
    }

    /// <summary>Writes what was added as one shard.</summary>
    public void Write(string path)
    {
        if (_tokens.Count == 0) throw new InvalidDataException("no tokens: the inputs hold no documents");
        TokenShard.Write(path, tokenizer.VocabSize, [.. _tokens], [.. _mask], Documents);
    }
}
