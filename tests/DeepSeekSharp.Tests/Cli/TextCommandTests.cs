using System.Text.Json;
using DeepSeekSharp.Tests.Text;

namespace DeepSeekSharp.Tests.Cli;

public class TextCommandTests
{
    [Fact]
    public void Tokenize_GoldenCases_WithAndWithoutBos()
    {
        var cases = TokenizerTests.Cases().Take(60).ToList();
        string input = string.Join("\n", cases.Select(c => JsonSerializer.Serialize(new { text = c.Text })));
        foreach (bool bos in new[] { false, true })
        {
            string[] args = bos ? ["tokenize", "--tokenizer", TokenizerTests.Dir, "--add-bos"] : ["tokenize", "--tokenizer", TokenizerTests.Dir];
            var (code, stdout, stderr) = CliRunner.RunWithInput(input, args);
            Assert.True(code == 0, stderr);
            string[] lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(cases.Count, lines.Length);
            for (int i = 0; i < cases.Count; i++)
            {
                int[] ids = JsonDocument.Parse(lines[i]).RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
                Assert.Equal(bos ? cases[i].IdsWithBos : cases[i].Ids, ids);
            }
        }
    }

    [Fact]
    public void Template_GoldenConversations_RenderByteIdentically()
    {
        var cases = ChatTemplateTests.Cases("cases.jsonl").ToList();
        string input = string.Join("\n", cases.Select(c => JsonSerializer.Serialize(new { messages = c.Messages, add_generation_prompt = c.AddGenerationPrompt })));
        var (code, stdout, stderr) = CliRunner.RunWithInput(input, "template", "--tokenizer", TokenizerTests.Dir);
        Assert.True(code == 0, stderr);
        string[] lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < cases.Count; i++)
            Assert.Equal(cases[i].Rendered, JsonDocument.Parse(lines[i]).RootElement.GetProperty("rendered").GetString());
    }

    [Fact]
    public void Template_R1FolderTemplate_RendersGolden()
    {
        using var dir = new TempDir();
        string template = File.ReadAllText(ChatTemplateTests.R1TemplatePath);
        File.WriteAllText(dir.File("tokenizer_config.json"), JsonSerializer.Serialize(new
        {
            bos_token = "<｜begin▁of▁sentence｜>", eos_token = "<｜end▁of▁sentence｜>", chat_template = template,
        }));
        var c = ChatTemplateTests.Cases("r1_cases.jsonl").First(x => x.Name.Contains("reasoning") || x.Name.Contains("multi"));
        var (code, stdout, _) = CliRunner.RunWithInput(JsonSerializer.Serialize(new { messages = c.Messages, add_generation_prompt = c.AddGenerationPrompt }),
            "template", "--tokenizer", dir.Path);
        Assert.Equal(0, code);
        Assert.Equal(c.Rendered, JsonDocument.Parse(stdout).RootElement.GetProperty("rendered").GetString());
    }

    [Fact]
    public void Tokenize_BadLine_ReportsItsNumberAndKeepsGoing()
    {
        var (code, stdout, stderr) = CliRunner.RunWithInput("{\"text\": \"a\"}\nnot json\n{\"txt\": 1}\n{\"text\": \"b\"}", "tokenize", "--tokenizer", TokenizerTests.Dir);
        Assert.Equal(1, code);
        Assert.Equal(2, stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Contains("line 2:", stderr);
        Assert.Contains("line 3: 'text' must be a string", stderr);
    }
}
