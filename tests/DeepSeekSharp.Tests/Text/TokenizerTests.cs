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
