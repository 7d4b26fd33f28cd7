using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Text;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Tests.Training;

/// <summary>The model shipped in assets/models/r1-tiny, which the README's main command talks to: it loads through the
/// same tokenizer, template and reasoning parser as a real R1, reasons before answering, and still solves held-out
/// problems (a guard on every piece of the path, from tokenizer to sampler).</summary>
public class BundledModelTests
{
    private static readonly string Model = Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny");

    [Fact]
    public void TheReadmeCommand_ShowsReasoning_ThenTheRightAnswer()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--prompt", "What is 452 + 379?", "--temperature", "0");
        Assert.True(code == 0, stderr);
        int close = stdout.IndexOf("</think>", StringComparison.Ordinal);
        Assert.True(stdout.StartsWith("<think>", StringComparison.Ordinal) && close > 0, stdout);
        Assert.Contains("ones: 2 + 9", stdout[..close]);          // the working, column by column
        Assert.Contains("831", stdout[close..]);                   // then the answer
    }

    [Fact]
    public void ItSolvesHeldOutProblems_Greedily()
    {
        using var model = DeepSeekModel.Load(Model);
        using var g = new Generator(model, Tokenizer.Load(Model));
        List<EvalResult> results = TaskEvaluation.Run(g, Arithmetic.Generate(Split.Heldout, 40, seed: 11),
            new GenerationOptions { MaxTokens = 320, Sampling = new SamplingOptions { Temperature = 0 } });
        // The model card reports ≥ 95% on 200 such problems; a broken tokenizer, template, parser or kernel drops it far.
        Assert.True(results.Count(r => r.Correct) >= 36, string.Join("\n", results.Where(r => !r.Correct).Select(r => r.Problem.Question + " → " + r.Completion)));
        Assert.All(results, r => Assert.True(r.WellFormed, r.Completion));
    }
}
