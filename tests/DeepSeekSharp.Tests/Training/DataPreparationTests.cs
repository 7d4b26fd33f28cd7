using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Text;
using DeepSeekSharp.Training.Data;

namespace DeepSeekSharp.Tests.Training;

/// <summary><c>dss prepare-data</c> with the bundled DeepSeek-V3 tokenizer: documents get BOS and EOS, text is all
/// targets, chat conversations are targets only on the assistant turns, and bad input names its file and line.</summary>
public class DataPreparationTests
{
    private static readonly Tokenizer Tok = Tokenizer.Load(Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3"));

    /// <summary>The shard prepare-data makes of these JSONL lines.</summary>
    private static TokenShard Prepare(params string[] lines)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("in.jsonl"), string.Concat(lines.Select(l => l + "\n")));
        var prep = new DataPreparation(Tok);
        prep.AddFile(dir.File("in.jsonl"));
        prep.Write(dir.File("in.tokens"));
        return TokenShard.Read(dir.File("in.tokens"));
    }

    /// <summary>The text of the tokens whose loss-mask byte is <paramref name="mask"/>.</summary>
    private static string Decode(int[] tokens, byte[] lossMask, byte mask) => Tok.Decode([.. tokens.Where((_, i) => lossMask[i] == mask)]);

    [Fact]
    public void TextDocuments_AreSeparatedByBlankLines_EachWithBosAndEos()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("a.txt"), "The cat sat.\n\nTwo plus two is four.\r\n");
        var (code, stdout, err) = CliRunner.Run("prepare-data", dir.File("a.txt"), "--out", dir.File("a.tokens"));
        Assert.True(code == 0, err);
        Assert.Contains("2 documents", stdout);
        TokenShard shard = TokenShard.Read(dir.File("a.tokens"));
        int bos = Tok.BosId!.Value, eos = Tok.EosId!.Value;
        int[] want = [bos, .. Tok.Encode("The cat sat.", addBos: false), eos, bos, .. Tok.Encode("Two plus two is four.", addBos: false), eos];
        Assert.Equal(want, shard.Tokens);
        Assert.Equal(2, shard.Documents);
        // Every token but BOS is a target (BOS is never predicted).
        Assert.Equal(want.Select(t => t == bos ? (byte)0 : (byte)1), shard.LossMask);
    }

    [Fact]
    public void ChatConversations_AreTargetsOnlyOnTheAssistantTurns()
    {
        TokenShard shard = Prepare(
            """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Peru?"}, {"role": "assistant", "content": "Lima."}]}""",
            """{"text": "plain text line"}""");
        int eos = Tok.EosId!.Value;
        int firstEnd = Array.IndexOf(shard.Tokens, eos, Array.IndexOf(shard.Tokens, eos) + 1); // the conversation ends at its 2nd EOS
        int[] conv = shard.Tokens[..(firstEnd + 1)];
        byte[] mask = shard.LossMask[..(firstEnd + 1)];
        string targets = Decode(conv, mask, 1), context = Decode(conv, mask, 0);
        Assert.Equal("Paris.<｜end▁of▁sentence｜>Lima.<｜end▁of▁sentence｜>", targets);
        Assert.Contains("Capital of France?", context);
        Assert.Contains("And of Peru?", context);
        Assert.Contains("Be brief.", context);
        // The whole conversation is the template's rendering, token for token.
        Assert.Equal(Tok.Decode(conv), Tok.Decode(Tok.Encode(Tok.Decode(conv), addBos: false)));
        Assert.Equal(2, shard.Documents);
        Assert.True(shard.LossMask[(firstEnd + 2)..].All(m => m == 1)); // the text document after it: all targets
    }

    [Fact]
    public void PromptCompletionPairs_LearnOnlyTheCompletion()
    {
        TokenShard shard = Prepare("""{"prompt": "<｜User｜>2+2?<｜Assistant｜><think>\n", "completion": "two and two\n</think>\n\n4<｜end▁of▁sentence｜>"}""");
        string targets = Decode(shard.Tokens, shard.LossMask, 1);
        Assert.Equal("two and two\n</think>\n\n4<｜end▁of▁sentence｜>", targets); // the completion's own EOS, not a second one
        Assert.Equal(Tok.BosId, shard.Tokens[0]);
        Assert.Equal("<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜><think>\n", Decode(shard.Tokens, shard.LossMask, 0));
    }

    private static Tokenizer WithTemplate(TempDir dir, string template)
    {
        string v3 = Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3");
        File.Copy(Path.Combine(v3, "tokenizer.json"), dir.File("tokenizer.json"), overwrite: true);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(v3, "tokenizer_config.json")))!;
        config["chat_template"] = template;
        File.WriteAllText(dir.File("tokenizer_config.json"), config.ToJsonString());
        return Tokenizer.Load(dir.Path);
    }

    [Fact]
    public void TemplatesThatDropReasoning_AreRefused_NotSilentlyTrainedOn()
    {
        using var dir = new TempDir();
        using var reasoning = System.Text.Json.JsonDocument.Parse(
            """[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>two and two</think>4"}]""");
        // R1's template: its prompt opens <think>, its assistant turns lose everything up to </think>.
        string r1 = System.Text.RegularExpressions.Regex.Unescape(File.ReadAllText(
            Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-r1", "chat_template.reconstructed.jinja")).Trim());
        var e = Assert.Throws<InvalidDataException>(() => new DataPreparation(WithTemplate(dir, r1)).AddChat(reasoning.RootElement));
        Assert.Contains("</think>", e.Message);
        // A template whose prompt is consistent but which strips the reasoning from the rendered turn.
        const string stripping = "{% for m in messages %}{% if m['role'] == 'assistant' %}<A>{{ m['content'].split('</think>')[-1] }}</A>" +
                                 "{% else %}<U>{{ m['content'] }}</U>{% endif %}{% endfor %}{% if add_generation_prompt %}<A>{% endif %}";
        var prep = new DataPreparation(WithTemplate(dir, stripping));
        e = Assert.Throws<InvalidDataException>(() => prep.AddChat(reasoning.RootElement));
        Assert.Contains("does not render assistant message 1 whole", e.Message);
        using var plain = System.Text.Json.JsonDocument.Parse("""[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]""");
        prep.AddChat(plain.RootElement); // what the template keeps whole is fine
        Assert.Equal(1, prep.Documents);
    }

    [Theory]
    [InlineData("{\"text\": 5}", "no \"text\" string")]
    [InlineData("not json", "not valid JSON")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "no assistant message")]
    public void BadLines_NameTheFileAndLine(string line, string message)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("bad.jsonl"), "{\"text\": \"fine\"}\n" + line + "\n");
        var (code, _, err) = CliRunner.Run("prepare-data", dir.File("bad.jsonl"), "--out", dir.File("bad.tokens"));
        Assert.Equal(1, code);
        Assert.Contains("bad.jsonl:2", err);
        Assert.Contains(message, err);
        Assert.False(File.Exists(dir.File("bad.tokens")));
    }
}
