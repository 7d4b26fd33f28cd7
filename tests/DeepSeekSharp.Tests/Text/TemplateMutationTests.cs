using System.Text.Json;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Tests.Text;

/// <summary>A broken template (truncated, edited) fails with TemplateException or NotSupportedException naming the
/// problem — never an unrelated exception that would take down a caller.</summary>
public class TemplateMutationTests
{
    [Fact]
    public void MutatedRealTemplates_RenderOrFailWithATemplateError()
    {
        string[] sources = [TokenizerTests.V3.Config.ChatTemplate!, File.ReadAllText(ChatTemplateTests.R1TemplatePath)];
        JsonElement messages = ChatTemplateTests.Cases("cases.jsonl").First(c => c.Name.Contains("tool")).Messages;
        var rng = new Random(99);
        string alphabet = "{}%#-()[]'\".|,:=+~ abcnorefis0123456789\n";
        int failures = 0;
        for (int trial = 0; trial < 400; trial++)
        {
            var src = new System.Text.StringBuilder(sources[trial % 2]);
            int edits = 1 + rng.Next(3);
            for (int e = 0; e < edits; e++)
            {
                int at = rng.Next(src.Length);
                switch (rng.Next(4))
                {
                    case 0: src[at] = alphabet[rng.Next(alphabet.Length)]; break;
                    case 1: src.Remove(at, Math.Min(1 + rng.Next(20), src.Length - at)); break;
                    case 2: src.Insert(at, alphabet[rng.Next(alphabet.Length)]); break;
                    default: src.Length = at; break;
                }
            }
            try
            {
                ChatTemplate.Parse(src.ToString()).Render(messages, addGenerationPrompt: true, "<bos>", "<eos>");
            }
            catch (Exception ex) when (ex is TemplateException or NotSupportedException)
            {
                Assert.False(string.IsNullOrWhiteSpace(ex.Message));
                failures++;
            }
        }
        Assert.True(failures > 50, $"only {failures} of 400 mutations failed; the mutations are too weak");
    }
}
