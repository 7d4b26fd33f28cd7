using System.Text.Json;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Text;

public class TokenizerTests
{
    public static readonly string Dir = Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3");
    private static readonly Lazy<Tokenizer> Shared = new(() => Tokenizer.Load(Dir));
    public static Tokenizer V3 => Shared.Value;

    public sealed record Case(string Name, string Text, int[] Ids, int[] IdsWithBos, string Decoded);

    public static IEnumerable<Case> Cases() =>
        File.ReadLines(GoldenCase.DataPath("tokenizer", "cases.jsonl")).Select(l =>
        {
            JsonElement e = JsonDocument.Parse(l).RootElement;
            int[] Ints(string n) => e.GetProperty(n).EnumerateArray().Select(x => x.GetInt32()).ToArray();
            return new Case(e.GetProperty("name").GetString()!, e.GetProperty("text").GetString()!, Ints("ids"), Ints("ids_with_bos"), e.GetProperty("decoded").GetString()!);
        });

    [Fact]
    public void Encode_EveryGoldenCase_GivesTheReferenceIdsWithAndWithoutBos()
    {
        var failures = new List<string>();
        foreach (Case c in Cases())
        {
            int[] ids = V3.Encode(c.Text, addBos: false);
            if (!ids.SequenceEqual(c.Ids)) failures.Add($"{c.Name}: [{string.Join(",", ids.Take(20))}] vs [{string.Join(",", c.Ids.Take(20))}]");
            if (!V3.Encode(c.Text).SequenceEqual(c.IdsWithBos)) failures.Add($"{c.Name} (with BOS from tokenizer_config.json)");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of 335 cases differ:\n" + string.Join("\n", failures.Take(20)));
    }

    [Fact]
    public void Decode_EveryGoldenCase_GivesTheReferenceText()
    {
        foreach (Case c in Cases())
            Assert.True(V3.Decode(c.Ids) == c.Decoded, c.Name);
    }

    [Fact]
    public void Encode_DigitsGroupInThreesFromTheLeft()
    {
        int[] ids = V3.Encode("1234567", addBos: false);
        Assert.Equal(["123", "456", "7"], ids.Select(i => V3.Decode([i])));
    }

    [Fact]
    public void Encode_SpecialTokenInsideText_IsOneToken()
    {
        int[] ids = V3.Encode("Hello<｜User｜>world", addBos: false);
        Assert.Contains(128803, ids);
        Assert.Equal("Hello<｜User｜>world", V3.Decode(ids));
        Assert.True(V3.IsSpecial(0));
        Assert.Equal(0, V3.BosId);
        Assert.Equal(1, V3.EosId);
    }

    [Fact]
    public void Decode_SkipSpecialTokens_DropsThem()
    {
        Assert.Equal("Hi", V3.Decode([0, .. V3.Encode("Hi", addBos: false), 1], skipSpecialTokens: true));
    }
}

public class TokenizerEdgeTests
{
    [Fact]
    public void Decode_IdBeyondTheTokenizerButInsideTheModel_GivesNoText()
    {
        // DeepSeek-V3's embedding has 129,280 rows; the tokenizer knows 128,815 ids.
        Assert.Equal("ab", TokenizerTests.V3.Decode([67, 128900, 68])); // 67 = "a", 68 = "b"
        Assert.Equal("", new StreamingDetokenizer(TokenizerTests.V3).Push(129000));
    }
}

public class TokenizerPropertyTests
{
    private static readonly (int Lo, int Hi)[] Ranges =
    [
        (0x20, 0x7E), (0x09, 0x0D), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
        (0x3040, 0x30FF), (0x4E00, 0x9FA5), (0xAC00, 0xD7A3), (0x1F300, 0x1F64F), (0x20000, 0x2A6DF), (0x0300, 0x036F),
        (0x2000, 0x206F), (0x0030, 0x0039), (0x1D7CE, 0x1D7FF), (0x0085, 0x0085), (0xFEFF, 0xFEFF), (0x00, 0x08),
    ];

    [Fact]
    public void RandomText_RoundTripsExactly_AndBosIsOnlyAddedWhenAsked()
    {
        var rng = new Random(2024);
        Tokenizer tok = TokenizerTests.V3;
        string[] fragments = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜end▁of▁sentence｜>", "   ", "\n\n", "1234567", "<｜"];
        for (int trial = 0; trial < 400; trial++)
        {
            var sb = new System.Text.StringBuilder();
            int len = rng.Next(0, 40);
            for (int i = 0; i < len; i++)
            {
                if (rng.Next(12) == 0) { sb.Append(fragments[rng.Next(fragments.Length)]); continue; }
                var (lo, hi) = Ranges[rng.Next(Ranges.Length)];
                sb.Append(char.ConvertFromUtf32(rng.Next(lo, hi + 1)));
            }
            string text = sb.ToString();
            int[] ids = tok.Encode(text, addBos: false);
            Assert.True(tok.Decode(ids) == text, $"round trip failed for {System.Text.Json.JsonSerializer.Serialize(text)}");
            Assert.Equal([0, .. ids], tok.Encode(text, addBos: true));
        }
    }
}
