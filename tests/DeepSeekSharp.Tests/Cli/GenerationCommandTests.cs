using DeepSeekSharp.Model;

namespace DeepSeekSharp.Tests.Cli;

public class GenerationCommandTests
{
    [Fact]
    public void Generate_StreamsTextAndPrintsUsageToStderr()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", RandomModel.V3Tiny, "--prompt", "Hello", "--max-tokens", "8",
            "--temperature", "0", "--context", "128");
        Assert.True(code == 0, stderr);
        Assert.False(string.IsNullOrWhiteSpace(stdout));
        Assert.Contains("completion 8", stderr);
        Assert.Contains("finish length", stderr);
        Assert.Contains("tokens/s", stderr);
    }

    [Fact]
    public void Generate_SameSeed_SameOutput_RawPromptWorks()
    {
        string[] args = ["generate", "--model", RandomModel.V3Tiny, "--prompt", "Once", "--raw", "--max-tokens", "6", "--seed", "4", "--context", "64"];
        Assert.Equal(CliRunner.Run(args).Stdout, CliRunner.Run(args).Stdout);
    }

    [Fact]
    public void Generate_SpeculativeMtp_SameGreedyOutput_ReportsDrafts_BadValueFails()
    {
        string[] args = ["generate", "--prompt", "What is 452 + 379?", "--temperature", "0"]; // the bundled R1-tiny
        var plain = CliRunner.Run(args);
        var (code, stdout, stderr) = CliRunner.Run([.. args, "--speculative", "mtp"]);
        Assert.True(code == 0, stderr);
        Assert.Equal(plain.Stdout, stdout);
        Assert.Contains("drafts accepted", stderr);
        var bad = CliRunner.Run([.. args, "--speculative", "eagle"]);
        Assert.Equal(1, bad.Code);
        Assert.Contains("--speculative 'eagle'", bad.Stderr);

        var chained = CliRunner.Run([.. args, "--speculative", "mtp", "--speculative-tokens", "3"]);
        Assert.True(chained.Code == 0, chained.Stderr);
        Assert.Equal(plain.Stdout, chained.Stdout);
        var tooMany = CliRunner.Run([.. args, "--speculative", "mtp", "--speculative-tokens", "9"]);
        Assert.Equal(1, tooMany.Code);
        Assert.Contains("'speculative_tokens' must be in [1, 8], got 9", tooMany.Stderr);
    }

    [Fact]
    public void Generate_CacheDir_ASecondRunRestoresThePromptFromDisk_WithTheSameOutput()
    {
        using var dir = new TempDir();
        string prompt = string.Join(" ", Enumerable.Range(0, 100).Select(i => $"item{i}"));
        string[] args = ["generate", "--model", RandomModel.V3Tiny, "--prompt", prompt, "--raw", "--max-tokens", "6", "--temperature", "0",
            "--context", "512", "--cache-dir", dir.Path];
        var first = CliRunner.Run(args);
        var second = CliRunner.Run(args); // another run: the blocks come from the folder
        Assert.True(first.Code == 0 && second.Code == 0, first.Stderr + second.Stderr);
        Assert.Equal(first.Stdout, second.Stdout);
        Assert.DoesNotContain("cached)", first.Stderr);
        Assert.Matches(@"prompt \d+ tokens \((64|128|192|256) cached\)", second.Stderr);
        Assert.NotEmpty(Directory.GetFiles(dir.Path, "*.blk", SearchOption.AllDirectories));
    }

    [Fact]
    public void Generate_Json_PrintsAJsonObject_AndASchemaWeCannotEnforceFailsNamingIt()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", RandomModel.V3Tiny, "--prompt", "Give me JSON", "--json",
            "--max-tokens", "24", "--seed", "2", "--context", "128");
        Assert.True(code == 0, stderr);
        using (var doc = System.Text.Json.JsonDocument.Parse(stdout)) Assert.Equal(System.Text.Json.JsonValueKind.Object, doc.RootElement.ValueKind);
        using var dir = new TempDir();
        File.WriteAllText(dir.File("s.json"), """{"type": "string", "pattern": "^a"}""");
        var bad = CliRunner.Run("generate", "--model", RandomModel.V3Tiny, "--prompt", "x", "--json-schema", dir.File("s.json"), "--context", "64");
        Assert.Equal(1, bad.Code);
        Assert.Contains("'pattern'", bad.Stderr);
    }

    [Fact]
    public void Generate_R1Tiny_ThinkingOff_AndReasoningBudget()
    {
        string[] args = ["generate", "--prompt", "What is 452 + 379?", "--temperature", "0"]; // the bundled R1-tiny
        var off = CliRunner.Run([.. args, "--thinking", "off"]);
        Assert.True(off.Code == 0, off.Stderr);
        Assert.DoesNotContain("<think>", off.Stdout);
        Assert.Contains("(0 reasoning)", off.Stderr);
        var budget = CliRunner.Run([.. args, "--reasoning-budget", "12"]);
        Assert.True(budget.Code == 0, budget.Stderr);
        int reasoning = int.Parse(System.Text.RegularExpressions.Regex.Match(budget.Stderr, @"\((\d+) reasoning\)").Groups[1].Value);
        Assert.InRange(reasoning, 1, 12);
        Assert.Contains("</think>", budget.Stdout);
        Assert.Matches(@"</think>\s*\S", budget.Stdout); // an answer follows
    }

    [Fact]
    public void Generate_Suffix_FillsInTheMiddle_OrSaysTheTokenizerCannot()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", RandomModel.V3Tiny, "--prompt", "def f(x):", "--suffix", "    return y",
            "--max-tokens", "4", "--context", "64");
        Assert.True(code == 0, stderr);
        var r1 = CliRunner.Run("generate", "--prompt", "a", "--suffix", "b"); // the bundled R1-tiny has no FIM tokens
        Assert.Equal(1, r1.Code);
        Assert.Contains("no FIM token", r1.Stderr);
    }

    [Fact]
    public void Generate_BadOption_FailsNamingIt()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", RandomModel.V3Tiny, "--prompt", "x", "--top-p", "1.5", "--context", "64");
        Assert.Equal(1, code);
        Assert.Contains("'top_p' must be in (0, 1]", stderr);
    }

    [Fact]
    public void Generate_ModelWithoutTokenizer_FailsNamingTheFile()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", GoldenCase.DataPath("v3-tiny"), "--prompt", "x");
        Assert.Equal(1, code);
        Assert.Contains("tokenizer.json", stderr);
    }

    [Fact]
    public void Chat_TwoTurnsThenResetThenExit_ThroughItsStreams()
    {
        string input = "Hello\nHow are you?\n/reset\nAgain\n/exit\nnever read\n";
        var (code, stdout, stderr) = CliRunner.RunWithInput(input, "chat", "--model", RandomModel.V3Tiny, "--max-tokens", "5",
            "--temperature", "0", "--context", "256");
        Assert.True(code == 0, stderr);
        Assert.Contains("dss chat", stdout);
        Assert.Equal(3, CountOf(stdout, "completion 5"));           // three answers, each with a stats line
        Assert.Contains("(conversation reset)", stdout);
        // After /reset the conversation restarts: "Again" is a first turn, so its prompt is as short as the first's.
        int[] prompts = System.Text.RegularExpressions.Regex.Matches(stdout, @"prompt (\d+) tokens").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
        Assert.Equal(3, prompts.Length);
        Assert.True(prompts[1] > prompts[0] + 5, "the second turn carries the first turn in its prompt");
        Assert.True(prompts[2] < prompts[1], "after /reset the history is gone");
    }

    private static int CountOf(string s, string sub) => (s.Length - s.Replace(sub, "").Length) / sub.Length;

    [Fact]
    public void CreateRandom_WritesALoadableShardedCheckpointWithTokenizer()
    {
        using var dir = new TempDir();
        string outDir = Path.Combine(dir.Path, "m");
        var (code, _, stderr) = CliRunner.Run("create-random", "--preset", "v2-lite-tiny", "--layers", "1", "--dtype", "f32", "--out", outDir, "--seed", "3");
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(Path.Combine(outDir, "model.safetensors.index.json")));
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer.json")));
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp"));
        DeepSeekModel m = DeepSeekModel.Load(outDir);
        Assert.Equal(129280, m.Config.VocabSize);
        Assert.Equal(1, m.Config.NLayers);
        using InferenceSession s = m.CreateSession(16);
        float[] logits = s.Forward([0, 100, 2000]);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        double std = Math.Sqrt(logits.Select(v => (double)v * v).Average());
        Assert.InRange(std, 0.05, 20); // sensible scale: neither vanishing nor exploding
    }

    [Fact]
    public void CreateRandom_UnknownPreset_FailsListingPresets()
    {
        var (code, _, stderr) = CliRunner.Run("create-random", "--preset", "gpt2", "--out", "/tmp/x");
        Assert.NotEqual(0, code);
        Assert.Contains("v2-lite", stderr);
    }
}
