using System.Text.Json;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Tests.Text;

public class ChatTemplateTests
{
    private const string Bos = "<｜begin▁of▁sentence｜>", Eos = "<｜end▁of▁sentence｜>";

    public static string R1TemplatePath => Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-r1", "chat_template.reconstructed.jinja");

    public static IEnumerable<(string Name, JsonElement Messages, bool AddGenerationPrompt, string Rendered, int[] Ids)> Cases(string file) =>
        File.ReadLines(GoldenCase.DataPath("chat", file)).Select(l =>
        {
            JsonElement e = JsonDocument.Parse(l).RootElement;
            return (e.GetProperty("name").GetString()!, e.GetProperty("messages"), e.GetProperty("add_generation_prompt").GetBoolean(),
                e.GetProperty("rendered").GetString()!, e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray());
        });

    [Theory]
    [InlineData("cases.jsonl")]
    [InlineData("r1_cases.jsonl")]
    public void Render_EveryGoldenConversation_IsByteIdenticalAndEncodesToTheReferenceIds(string file)
    {
        string source = file == "cases.jsonl" ? TokenizerTests.V3.Config.ChatTemplate! : File.ReadAllText(R1TemplatePath);
        ChatTemplate template = ChatTemplate.Parse(source);
        int n = 0;
        foreach (var (name, messages, gen, rendered, ids) in Cases(file))
        {
            string ours = template.Render(messages, gen, Bos, Eos);
            Assert.True(ours == rendered, $"{file} {name}:\nours: {ours}\nref:  {rendered}");
            Assert.True(TokenizerTests.V3.Encode(ours, addBos: false).SequenceEqual(ids), $"{file} {name}: ids differ");
            n++;
        }
        Assert.Equal(36, n);
    }

    private static string Render(string template, object? vars = null)
    {
        var d = new Dictionary<string, object?>();
        if (vars is not null)
            foreach (var p in vars.GetType().GetProperties()) d[p.Name] = p.GetValue(vars);
        return ChatTemplate.Parse(template).Render(d);
    }

    [Theory]
    [InlineData("{% for x in items %}{{ loop.index }}:{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", "1:a,2:b,3:c")]
    [InlineData("{{ 'a,b,c'.split(',')[-1] }}", "c")]
    [InlineData("{{ '  x  '|trim }}|{{ '  x '.strip() }}", "x|x")]
    [InlineData("{{ items|length }} {{ items|join('-') }} {{ items[1:]|join }}", "3 a-b-c bc")]
    [InlineData("{% set ns = namespace(n=0) %}{% for x in items %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "3")]
    [InlineData("{% set n = 0 %}{% for x in items %}{% set n = n + 1 %}{% endfor %}{{ n }}", "0")] // loop scope does not leak
    [InlineData("{{ 'yes' if 'b' in items else 'no' }} {{ 'z' not in items }}", "yes True")]
    [InlineData("{{ d|tojson }}", "{\"k\": [1, \"é\\n\"], \"b\": true, \"n\": null}")]
    [InlineData("{{ missing is defined }} {{ none is none }} {{ 3 is odd }}", "False True True")]
    [InlineData("{% if x == 1 %}one{% elif x == 2 %}two{% else %}other{% endif %}", "two")]
    [InlineData("a  \n  {%- if true %}b{% endif -%}  \n c", "abc")] // - strips every whitespace, newlines too
    [InlineData("{% for k, v in d.items() %}{{ k }}={{ v|tojson }};{% endfor %}", "k=[1, \"é\\n\"];b=true;n=null;")]
    [InlineData("{{ 7 // 2 }} {{ 7 % 3 }} {{ 2 * 3 + 1 }} {{ 'ab' ~ 1 }} {{ -3|abs }}", "3 1 7 ab1 3")]
    [InlineData("{% for x in items if x != 'b' %}{{ x }}{% else %}none{% endfor %}", "ac")]
    public void Render_JinjaFeatures_BehaveAsJinja(string template, string expected)
    {
        var d = new Dictionary<string, object?> { ["k"] = new List<object?> { 1L, "é\n" }, ["b"] = true, ["n"] = null };
        Assert.Equal(expected, Render(template, new { items = new List<object?> { "a", "b", "c" }, x = 2L, d }));
    }

    [Fact]
    public void Render_TrimAndLstripBlocks_LikeTransformers()
    {
        // trim_blocks drops the newline after a block tag; lstrip_blocks drops indentation before one.
        Assert.Equal("a\nb\n", Render("{% if true %}\na\n    {% endif %}\nb\n"));
    }

    [Fact]
    public void Render_RaiseException_ThrowsWithTheTemplatesMessage()
    {
        var e = Assert.Throws<TemplateException>(() => Render("{{ raise_exception('Only user and assistant roles are supported!') }}"));
        Assert.Contains("Only user and assistant roles are supported!", e.Message);
    }

    [Theory]
    [InlineData("{% if x %}unclosed", "expected elif, else or endif")]
    [InlineData("{{ 1 + }}", "unexpected")]
    [InlineData("{{ x", "never closed")]
    public void Parse_BrokenTemplate_ThrowsTemplateException(string template, string message)
    {
        Assert.Contains(message, Assert.Throws<TemplateException>(() => ChatTemplate.Parse(template)).Message);
    }

    [Fact]
    public void Render_NoneConcatenatedToString_ThrowsNamingTypes()
    {
        var e = Assert.Throws<TemplateException>(() => Render("{{ 'a' + n }}", new { n = (object?)null }));
        Assert.Contains("'str' and 'NoneType'", e.Message);
    }
}
