using System.Text.Json;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Tests.Training;

/// <summary>R1's cold-start data: the tokenizer folder loads with R1's template, an example's prompt is what the
/// engine itself sends for that question, and its completion holds the reasoning, the answer and end-of-sentence;
/// <c>dss eval</c> refuses unknown tasks and splits and models that cannot write &lt;think&gt;.</summary>
public class R1DataTests
{
    private static string Assets(params string[] p) => Path.Combine([AppContext.BaseDirectory, "assets", "tokenizers", .. p]);

    [Fact]
    public void AnExample_IsTheEnginesPrompt_ThenTheWorkedSolution()
    {
        using var dir = new TempDir();
        using JsonDocument v3 = JsonDocument.Parse(File.ReadAllText(Assets("deepseek-v3", "tokenizer.json")));
        string template = File.ReadAllText(Assets("deepseek-r1", "chat_template.reconstructed.jinja")).Trim();
        var problems = Arithmetic.Generate(Split.Train, 300, seed: 4);
        R1Data.WriteTokenizer(dir.Path, problems, 400, v3.RootElement.GetProperty("pre_tokenizer"), template);
        Tokenizer tok = Tokenizer.Load(dir.Path);
        Assert.NotNull(tok.TryTokenToId("<think>"));
        Problem p = problems[0];
        var (prompt, completion) = R1Data.Example(p, ChatTemplate.Parse(tok.Config.ChatTemplate!));
        Assert.Equal($"<｜begin▁of▁sentence｜><｜User｜>{p.Question}<｜Assistant｜><think>\n", prompt);
        Assert.StartsWith("We need", completion);
        Assert.EndsWith($"</think>\n\nThe answer is {p.Answer}.<｜end▁of▁sentence｜>", completion);
        Assert.Equal((true, true), Arithmetic.Verify(completion.Replace("<｜end▁of▁sentence｜>", ""), p.Answer));
    }

    [Theory]
    [InlineData("--task", "countdown", "unknown task 'countdown'")]
    [InlineData("--split", "test", "unknown split 'test'")]
    public void Eval_RefusesUnknownTasksAndSplits(string option, string value, string message)
    {
        var (code, _, err) = CliRunner.Run("eval", "--model", GoldenCase.DataPath("v3-tiny"), option, value);
        Assert.Equal(1, code);
        Assert.Contains(message, err);
    }

    [Fact]
    public void Eval_RefusesAModelWhoseTokenizerCannotThink()
    {
        // DeepSeek-V3's own tokenizer has no <think> token (R1's added it).
        using var dir = TempDir.CopyOf("v3-tiny");
        foreach (string f in new[] { "tokenizer.json", "tokenizer_config.json" }) File.Copy(Assets("deepseek-v3", f), dir.File(f));
        var (code, _, err) = CliRunner.Run("eval", "--model", dir.Path, "--samples", "1");
        Assert.Equal(1, code);
        Assert.Contains("no <think> token", err);
    }
}
