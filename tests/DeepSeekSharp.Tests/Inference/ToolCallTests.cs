using System.Text;
using System.Text.Json;
using DeepSeekSharp.Inference.Constraints;
using DeepSeekSharp.Inference.Tools;
using DeepSeekSharp.Tests.Text;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Tests.Inference;

/// <summary>Tool calls in DeepSeek's two formats: V3.1's template renders conversations with calls and results
/// exactly as a real Jinja engine does, the streaming parser recovers names and arguments however the text is cut
/// into tokens, and the call grammar accepts exactly calls of the offered tools with arguments their schemas accept.</summary>
public class ToolCallTests
{
    private const string Bos = "<｜begin▁of▁sentence｜>", Eos = "<｜end▁of▁sentence｜>";
    internal static string V31TemplatePath => GoldenCase.DataPath("chat", "deepseek-v3.1.jinja");
    private static Tokenizer V3 => TokenizerTests.V3;
    private static ToolTokens Tokens => ToolTokens.For(V3)!;

    [Fact]
    public void V31_template_renders_every_golden_conversation_byte_for_byte()
    {
        ChatTemplate template = ChatTemplate.Parse(File.ReadAllText(V31TemplatePath));
        int n = 0, withTools = 0;
        foreach (string line in File.ReadLines(GoldenCase.DataPath("chat", "v31_cases.jsonl")))
        {
            JsonElement c = JsonDocument.Parse(line).RootElement;
            JsonElement messages = c.GetProperty("messages");
            string ours = template.Render(messages, c.GetProperty("add_generation_prompt").GetBoolean(), Bos, Eos,
                new Dictionary<string, object?> { ["thinking"] = c.GetProperty("thinking").GetBoolean() });
            string expected = c.GetProperty("rendered").GetString()!;
            Assert.True(ours == expected, $"{c.GetProperty("name")} thinking={c.GetProperty("thinking")}:\nours: {ours}\nref:  {expected}");
            n++;
            if (expected.Contains(ToolTokens.CallsBeginText)) withTools++;
        }
        Assert.Equal(82, n);
        Assert.True(withTools >= 10, $"{withTools} renders with tool calls");
    }

    /// <summary>DeepSeek-V3's template over conversations with parallel calls, results, content beside a call and a
    /// result ending the conversation (rendered by @huggingface/jinja; the 36 shared golden cases cover more).</summary>
    [Fact]
    public void V3_template_renders_the_tool_conversations_byte_for_byte()
    {
        ChatTemplate template = ChatTemplate.Parse(V3.Config.ChatTemplate!);
        int n = 0;
        foreach (string line in File.ReadLines(GoldenCase.DataPath("chat", "v3_tool_cases.jsonl")))
        {
            JsonElement c = JsonDocument.Parse(line).RootElement;
            string ours = template.Render(c.GetProperty("messages"), c.GetProperty("add_generation_prompt").GetBoolean(), Bos, Eos);
            Assert.Equal(c.GetProperty("rendered").GetString(), ours);
            n++;
        }
        Assert.Equal(5, n);
    }

    [Theory]
    [InlineData("deepseek-v3", ToolCallFormat.V3)]
    [InlineData("v3.1", ToolCallFormat.V31)]
    [InlineData("r1", ToolCallFormat.V3)]
    public void The_format_is_read_from_the_template(string which, ToolCallFormat expected)
    {
        string source = which switch
        {
            "deepseek-v3" => V3.Config.ChatTemplate!,
            "v3.1" => File.ReadAllText(V31TemplatePath),
            _ => File.ReadAllText(ChatTemplateTests.R1TemplatePath),
        };
        Assert.Equal(expected, ToolCalling.FormatOf(source));
    }

    private static readonly (string Name, string Arguments)[] Calls =
    [
        ("get_weather", """{"city": "Zürich", "days": [1, 2], "note": "a ```fence``` and\nnewline"}"""),
        ("now", "{}"),
        ("translate", """{"text": "日本語 😀", "to": "fr"}"""),
    ];

    /// <summary>The text a model writes for <see cref="Calls"/>, as the template of each format renders calls.</summary>
    private static string Written(ToolCallFormat format) => ToolTokens.CallsBeginText + string.Join(format == ToolCallFormat.V3 ? "\n" : "",
        Calls.Select(c => format == ToolCallFormat.V3
            ? $"{ToolTokens.CallBeginText}function{ToolTokens.SepText}{c.Name}\n```json\n{c.Arguments}\n```{ToolTokens.CallEndText}"
            : $"{ToolTokens.CallBeginText}{c.Name}{ToolTokens.SepText}{c.Arguments}{ToolTokens.CallEndText}")) + ToolTokens.CallsEndText;

    /// <summary>The written text as (token, bytes) pieces: special tokens whole, the text between them cut at
    /// <paramref name="cuts"/> (byte offsets), so a piece may end inside a fence, a tag or a UTF-8 character.</summary>
    private static List<(int Id, byte[] Bytes)> Pieces(string written, Func<int, bool> cut)
    {
        var pieces = new List<(int, byte[])>();
        foreach (int id in V3.Encode(written, addBos: false))
        {
            if (V3.IsSpecial(id) || V3.IsAddedToken(id)) { pieces.Add((id, V3.TokenBytes(id).ToArray())); continue; }
            pieces.Add((id, V3.TokenBytes(id).ToArray()));
        }
        // Re-cut the plain text between special tokens at the requested byte offsets.
        var result = new List<(int, byte[])>();
        var run = new List<byte>();
        int offset = 0;
        void FlushRun()
        {
            int start = 0;
            for (int i = 1; i <= run.Count; i++)
                if (i == run.Count || cut(offset + i))
                {
                    result.Add((-1, run.GetRange(start, i - start).ToArray()));
                    start = i;
                }
            offset += run.Count;
            run.Clear();
        }
        foreach (var (id, bytes) in pieces)
        {
            if (V3.IsSpecial(id) || V3.IsAddedToken(id)) { FlushRun(); result.Add((id, bytes)); }
            else run.AddRange(bytes);
        }
        FlushRun();
        return result;
    }

    private static List<(string Name, string Arguments, string Id)> Parse(ToolCallFormat format, List<(int Id, byte[] Bytes)> pieces)
    {
        var parser = new ToolCallParser(Tokens, format);
        var deltas = new List<ToolCallDelta>();
        foreach (var (id, bytes) in pieces)
        {
            Assert.True(parser.Takes(id) || id == Tokens.CallsBegin);
            parser.Push(id, bytes, deltas);
        }
        parser.Flush(deltas);
        Assert.False(parser.Active);
        var calls = new List<(string Name, StringBuilder Arguments, string Id)>();
        foreach (ToolCallDelta d in deltas)
        {
            if (d.Name is not null) { Assert.Equal(calls.Count, d.Index); calls.Add((d.Name, new StringBuilder(), d.Id!)); }
            calls[d.Index].Arguments.Append(d.Arguments);
        }
        return calls.Select(c => (c.Name, c.Arguments.ToString(), c.Id)).ToList();
    }

    [Theory]
    [InlineData(ToolCallFormat.V3)]
    [InlineData(ToolCallFormat.V31)]
    public void Parser_recovers_names_and_arguments_wherever_the_text_is_cut(ToolCallFormat format)
    {
        string written = Written(format);
        int textBytes = Pieces(written, _ => false).Where(p => p.Id < 0).Sum(p => p.Bytes.Length);
        var cutEverywhere = new List<Func<int, bool>> { _ => false, _ => true };
        for (int k = 1; k < textBytes; k++) { int at = k; cutEverywhere.Add(o => o == at); }          // one cut at every offset
        for (int k = 2; k < 9; k++) { int step = k; cutEverywhere.Add(o => o % step == 0); }          // regular cuts
        foreach (Func<int, bool> cut in cutEverywhere)
        {
            var calls = Parse(format, Pieces(written, cut));
            Assert.Equal(Calls.Select(c => c.Name), calls.Select(c => c.Name));
            Assert.Equal(Calls.Select(c => c.Arguments), calls.Select(c => c.Arguments));
            Assert.Equal(calls.Count, calls.Select(c => c.Id).Distinct().Count());
        }
    }

    private static readonly ToolDefinition[] Defs =
    [
        new("get_weather", "Weather", JsonDocument.Parse("""{"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "array", "items": {"type": "integer"}}, "note": {"type": "string"}}, "required": ["city"]}""").RootElement),
        new("now"),
        new("translate", null, JsonDocument.Parse("""{"type": "object", "properties": {"text": {"type": "string"}, "to": {"enum": ["fr", "de"]}}, "required": ["text", "to"]}""").RootElement),
    ];

    private static bool Walk(TokenGrammar g, string text)
    {
        GrammarMatcher m = g.NewMatcher();
        foreach (int id in V3.Encode(text, addBos: false))
            if (!m.TryAccept(id)) return false;
        return m.IsComplete;
    }

    [Theory]
    [InlineData(ToolCallFormat.V3)]
    [InlineData(ToolCallFormat.V31)]
    public void Call_grammar_accepts_the_offered_calls_and_nothing_else(ToolCallFormat format)
    {
        var g = new TokenGrammar(ToolCalling.CallGrammar(Defs, Tokens, format), V3, 129280, [1]);
        Assert.True(Walk(g, Written(format)));
        string Bad(string from, string to) => Written(format).Replace(from, to);
        Assert.False(Walk(g, Bad("translate", "transmute")));                 // unknown tool
        Assert.False(Walk(g, Bad("\"to\": \"fr\"", "\"to\": \"es\"")));        // outside the enum
        Assert.False(Walk(g, Bad("\"days\": [1, 2]", "\"days\": [1.5]")));     // not an integer
        Assert.False(Walk(g, ToolTokens.CallsBeginText + ToolTokens.CallsEndText)); // no call at all
        var single = new TokenGrammar(ToolCalling.CallGrammar(Defs, Tokens, format, only: "now"), V3, 129280, [1]);
        Assert.False(Walk(single, Written(format)));                           // only 'now', once
    }
}
