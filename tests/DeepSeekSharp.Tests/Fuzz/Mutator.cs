using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DeepSeekSharp.Tests.Fuzz;

/// <summary>Structure-aware mutation (no coverage guidance): byte edits that target length fields and tokens —
/// bit flips, boundary integers, deleted, duplicated and spliced ranges, dictionary tokens, truncation — and, for
/// JSON inputs, edits of the parsed tree (a value of another type, an extreme number, a removed or repeated member,
/// deep nesting), so inputs get past the JSON parser and reach the code behind it.</summary>
internal static class Mutator
{
    private static readonly long[] Boundaries = [0, 1, -1, 2, 127, 128, 255, 256, 32767, 65535, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 32, 1L << 40];

    public static byte[] Mutate(byte[] input, IReadOnlyList<byte[]> corpus, string[] dictionary, bool json, Random rng)
    {
        byte[] data = input;
        if (json && rng.Next(3) > 0 && TryMutateJson(data, rng) is { } tree) data = tree;
        int edits = rng.Next(3) == 0 ? 0 : 1 + rng.Next(3);
        for (int e = 0; e < edits; e++) data = EditBytes(data, corpus, dictionary, rng);
        return data;
    }

    private static byte[] EditBytes(byte[] d, IReadOnlyList<byte[]> corpus, string[] dictionary, Random rng)
    {
        var b = new List<byte>(d);
        int At(int extra = 0) => rng.Next(Math.Max(1, b.Count + extra));
        switch (rng.Next(8))
        {
            case 0 when b.Count > 0: { int i = At(); b[i] ^= (byte)(1 << rng.Next(8)); break; }
            case 1 when b.Count > 0: { int i = At(); b[i] = (byte)(rng.Next(4) switch { 0 => 0, 1 => 0xFF, 2 => 0x7F, _ => 0x80 }); break; }
            case 2 when b.Count >= 8:
            {
                int i = rng.Next(b.Count - 7);
                byte[] v = BitConverter.GetBytes(Boundaries[rng.Next(Boundaries.Length)]);
                int width = rng.Next(2) == 0 ? 4 : 8;
                for (int k = 0; k < width; k++) b[i + k] = v[k];
                break;
            }
            case 3 when b.Count > 0: { int i = At(), n = Math.Min(1 + rng.Next(16), b.Count - i); b.RemoveRange(i, n); break; }
            case 4 when b.Count > 0: { int i = At(), n = Math.Min(1 + rng.Next(32), b.Count - i); b.InsertRange(At(), b.GetRange(i, n).ToArray()); break; }
            case 5: b.InsertRange(At(1), Encoding.UTF8.GetBytes(dictionary[rng.Next(dictionary.Length)])); break;
            case 6:
            {
                byte[] other = corpus[rng.Next(corpus.Count)];
                int cut = At(), from = rng.Next(Math.Max(1, other.Length));
                b.RemoveRange(cut, b.Count - cut);
                b.AddRange(other.AsSpan(Math.Min(from, other.Length)).ToArray());
                break;
            }
            default: { int cut = rng.Next(b.Count + 1); b.RemoveRange(cut, b.Count - cut); break; } // truncate
        }
        return [.. b];
    }

    /// <summary>The tree edit, or null when the input is not JSON the node API can rewrite (it reads strings
    /// lazily, so invalid text surfaces anywhere in the edit).</summary>
    private static byte[]? TryMutateJson(byte[] data, Random rng)
    {
        try { return MutateJson(data, rng); }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException) { return null; }
    }

    private static byte[]? MutateJson(byte[] data, Random rng)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(data, documentOptions: new JsonDocumentOptions { MaxDepth = 256 }); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { return null; }
        if (root is null) return null;
        var nodes = new List<JsonNode>();
        Collect(root, nodes);
        int edits = 1 + rng.Next(3);
        for (int e = 0; e < edits && nodes.Count > 1; e++)
        {
            JsonNode target = nodes[1 + rng.Next(nodes.Count - 1)];
            JsonNode? parent = target.Parent;
            if (parent is null) continue;
            JsonNode? replacement = rng.Next(5) == 0 ? null : RandomValue(rng, target);
            switch (parent)
            {
                case JsonObject o:
                    string key = target.GetPropertyName();
                    if (rng.Next(6) == 0) o.Remove(key);
                    else o[key] = replacement;
                    break;
                case JsonArray a:
                    int i = target.GetElementIndex();
                    if (rng.Next(6) == 0) a.RemoveAt(i);
                    else if (rng.Next(6) == 0) a.Add(target.DeepClone());
                    else a[i] = replacement;
                    break;
            }
            nodes.Clear();
            Collect(root, nodes);
        }
        try { return Encoding.UTF8.GetBytes(root.ToJsonString()); }
        catch (Exception x) when (x is InvalidOperationException or ArgumentException) { return null; }
    }

    private static void Collect(JsonNode n, List<JsonNode> into)
    {
        into.Add(n);
        if (n is JsonObject o) foreach (var kv in o) { if (kv.Value is not null) Collect(kv.Value, into); }
        else if (n is JsonArray a) foreach (JsonNode? c in a) { if (c is not null) Collect(c, into); }
    }

    private static readonly string[] Strings = ["", " ", "\0", "ü", "😀", "<｜begin▁of▁sentence｜>", "<think>", "{{", "{%", "NaN", "-1", "1e999", new string('a', 300), "\n\n", "a\u200Db"];

    private static JsonNode? RandomValue(Random rng, JsonNode old) => rng.Next(12) switch
    {
        0 => JsonValue.Create(true),
        1 => JsonValue.Create(Boundaries[rng.Next(Boundaries.Length)]),
        2 => JsonValue.Create(rng.Next(2) == 0 ? double.MaxValue : -double.Epsilon),
        3 => JsonValue.Create(Strings[rng.Next(Strings.Length)]),
        4 => new JsonArray(),
        5 => new JsonObject(),
        6 => JsonNode.Parse("99999999999999999999999999"),
        7 => Nest(rng.Next(2, 80)),
        8 => new JsonArray(old.DeepClone(), old.DeepClone()),
        9 => JsonValue.Create(rng.NextDouble() * 2 - 1),
        10 => old.DeepClone() is JsonValue v && v.TryGetValue(out string? s) ? JsonValue.Create(s + s) : old.DeepClone(),
        _ => JsonValue.Create(rng.Next(-3, 70000)),
    };

    private static JsonNode Nest(int depth)
    {
        JsonNode n = new JsonArray();
        for (int i = 0; i < depth; i++) n = new JsonArray(n);
        return n;
    }
}
