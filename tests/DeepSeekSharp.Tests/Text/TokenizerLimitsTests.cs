using System.Diagnostics;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Text;

/// <summary>A stranger's text costs bounded memory and, when it cannot fit, little time.</summary>
public class TokenizerLimitsTests
{
    private static Tokenizer Fresh() => Tokenizer.Load(Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3"));

    [Fact]
    public void LongPieces_AreNotCached_SoTheCacheCannotBeFilledWithMegabytes()
    {
        Tokenizer t = Fresh();
        var rng = new Random(3);
        for (int i = 0; i < 50; i++)
            t.Encode(new string(Enumerable.Range(0, 20_000).Select(_ => (char)('a' + rng.Next(26))).ToArray()));
        Assert.Equal(0, t.CachedPieces);
        t.Encode("hello world");
        Assert.Equal(2, t.CachedPieces);
    }

    [Fact]
    public void TheCache_NeverHoldsMoreThanItsLimit()
    {
        Tokenizer t = Fresh();
        for (int i = 0; i < Tokenizer.MaxCacheEntries + 5_000; i += 1000)
            t.Encode(string.Join(" ", Enumerable.Range(i, 1000).Select(n => "w" + n.ToString("x"))));
        Assert.InRange(t.CachedPieces, 1, Tokenizer.MaxCacheEntries);
    }

    [Fact]
    public void ATextThatCannotFit_IsRefusedBeforeItIsTokenised()
    {
        Tokenizer t = Fresh();
        string word = new('z', 3_000_000); // one pre-token: BPE of it alone takes seconds
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<PromptTooLongException>(() => t.Encode(word, maxTokens: 4096));
        Assert.Equal(4096, e.Limit);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"{clock.Elapsed.TotalSeconds:0.00} s"); // the bound, not BPE
    }

    [Theory]
    [InlineData("Hello world, this is a test.")]
    [InlineData("Hello <｜User｜> world")]
    [InlineData("<｜User｜>")]
    public void TheLimit_IsExact_AtTheBoundary(string text)
    {
        Tokenizer t = Fresh();
        int exact = t.Encode(text, addBos: false).Length; // a text of exactly that many tokens fits a limit of that many
        Assert.Equal(t.Encode(text, addBos: false), t.Encode(text, addBos: false, maxTokens: exact));
        Assert.Throws<PromptTooLongException>(() => t.Encode(text, addBos: false, maxTokens: exact - 1));
    }
}
