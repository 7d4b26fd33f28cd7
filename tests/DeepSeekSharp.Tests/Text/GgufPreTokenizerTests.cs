using System.Text.RegularExpressions;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Text;

/// <summary>The pre-tokenizers a GGUF file names (<c>tokenizer.ggml.pre</c>), as llama.cpp lists them.</summary>
public class GgufPreTokenizerTests
{
    private static List<string> Pieces(PreTokenizer p, string text)
    {
        var pieces = new List<(int Start, int Length)>();
        p.Split(text, pieces);
        return pieces.Select(x => text.Substring(x.Start, x.Length)).ToList();
    }

    [Theory]
    [InlineData("deepseek-v3")]
    [InlineData("deepseek-llm")]
    public void EveryNamedPattern_Compiles_AndGivesTheTextBack(string name)
    {
        PreTokenizer p = PreTokenizer.ForGguf(name);
        const string text = "Hello, world! 12345 你好 ώΐ\r\nx";
        Assert.Equal(text, string.Concat(Pieces(p, text)));
        Assert.Equal(name, p.GgufName);
    }

    [Theory]
    [InlineData('\u1F7D')] // ώ with oxia: the top of the range Ὗ-ώ (NFC would make it U+03CE and the range reversed)
    [InlineData('\u1FD3')] // ΐ with oxia (ῐ-ΐ)
    [InlineData('\u1FDB')] // Ί with oxia (ῖ-Ί)
    [InlineData('\u2126')] // ohm sign
    [InlineData('\u212A')] // kelvin sign (K-ℭ)
    public void DeepseekLlm_TakesTheLettersWithCanonicalEquivalents_AsLetters(char letter)
    {
        // The second regex is llama.cpp's letter class: these code points are its range ends and members as written
        // there, not their canonical equivalents (which made three ranges reversed).
        Regex letters = PreTokenizer.ForGguf("deepseek-llm").Splits[1];
        Assert.Contains(letter, letters.ToString());
        Assert.Equal(3, letters.Match(" a" + letter + "b").Length - 1);
    }

    [Fact]
    public void GgufName_OfAnUnlistedPattern_IsNull()
    {
        Assert.Null(new PreTokenizer([new Regex("[a-z]+")]).GgufName);
    }

}
