using System.Text.Json;

namespace DeepSeekSharp.Tests;

/// <summary>A golden model case from tests/data (copied byte-identical from shared/golden): a Hugging Face
/// checkpoint plus expected.json with the logits of DeepSeek's reference inference/model.py.</summary>
public sealed class GoldenCase
{
    public static readonly string[] All = ["v3-tiny", "v2-lite-tiny", "v2-grouped-tiny", "v3-fp8-tiny"];

    public required string Name { get; init; }
    public required string Directory { get; init; }
    public required int[] PromptIds { get; init; }
    public required float[] PrefillLastLogits { get; init; }
    public required float[][] PerPositionLogits { get; init; }
    public required (int InputId, int Position, float[] Logits)[] Decode { get; init; }
    public required (int Position, int TokenId, int[] Experts, float[] Weights)[] Routing { get; init; }
    public (int Position, int InputId, float[] Logits)[] Mtp { get; init; } = [];

    public static string DataPath(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "data", .. parts]);

    private static readonly Dictionary<string, GoldenCase> Cache = new();

    public static GoldenCase Load(string name)
    {
        lock (Cache)
        {
            if (Cache.TryGetValue(name, out GoldenCase? c)) return c;
            string dir = DataPath(name);
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "expected.json")));
            JsonElement r = doc.RootElement;
            c = new GoldenCase
            {
                Name = name,
                Directory = dir,
                PromptIds = Ints(r.GetProperty("prompt_ids")),
                PrefillLastLogits = Floats(r.GetProperty("prefill_last_logits")),
                PerPositionLogits = r.GetProperty("per_position_logits").EnumerateArray().Select(Floats).ToArray(),
                Decode = r.GetProperty("decode").EnumerateArray()
                    .Select(e => (e.GetProperty("input_id").GetInt32(), e.GetProperty("position").GetInt32(), Floats(e.GetProperty("logits")))).ToArray(),
                Routing = r.GetProperty("moe_routing_first_moe_layer").EnumerateArray()
                    .Select(e => (e.GetProperty("position").GetInt32(), e.GetProperty("token_id").GetInt32(), Ints(e.GetProperty("experts")), Floats(e.GetProperty("weights")))).ToArray(),
                Mtp = r.TryGetProperty("mtp", out JsonElement mtp)
                    ? mtp.EnumerateArray().Select(e => (e.GetProperty("position").GetInt32(), e.GetProperty("input_id").GetInt32(), Floats(e.GetProperty("logits")))).ToArray()
                    : [],
            };
            Cache[name] = c;
            return c;
        }
    }

    private static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
    private static float[] Floats(JsonElement e) => e.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray();
}

public static class Compare
{
    /// <summary>max |a − b| / max |b| — the golden README's metric.</summary>
    public static double MaxRelative(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs((double)actual[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs((double)expected[i]));
        }
        return maxDiff / maxRef;
    }

    public static void Close(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double tolerance, string what)
    {
        double rel = MaxRelative(actual, expected);
        Assert.True(rel <= tolerance, $"{what}: max|ours - ref|/max|ref| = {rel:E3} > {tolerance:E1}");
    }
}
