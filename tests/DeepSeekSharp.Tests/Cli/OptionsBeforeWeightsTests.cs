namespace DeepSeekSharp.Tests.Cli;

/// <summary>Bad options are reported before any weights load: the folder here has a config and a tokenizer but no
/// weights at all, so an error about the option proves the weights were never touched.</summary>
public class OptionsBeforeWeightsTests
{
    private static string WeightlessModel(TempDir dir)
    {
        string d = dir.File("weightless");
        Directory.CreateDirectory(d);
        foreach (string f in Directory.GetFiles(RandomModel.V3Tiny).Where(f => f.EndsWith(".json", StringComparison.Ordinal) && !f.Contains("index")))
            File.Copy(f, Path.Combine(d, Path.GetFileName(f)));
        return d;
    }

    [Theory]
    [InlineData("generate", "--temperature", "-1", "temperature")]
    [InlineData("generate", "--top-p", "0", "top_p")]
    [InlineData("chat", "--temperature", "9", "temperature")]
    [InlineData("generate", "--max-tokens", "0", "max_tokens")]
    public void BadGenerationOptions_AreReportedBeforeTheWeightsLoad(string command, string option, string value, string named)
    {
        using var dir = new TempDir();
        string[] args = command == "generate"
            ? ["generate", "--model", WeightlessModel(dir), "--prompt", "hi", option, value]
            : ["chat", "--model", WeightlessModel(dir), option, value];
        var (code, _, err) = CliRunner.RunWithInput("", args);
        Assert.Equal(1, code);
        Assert.Contains(named, err);
        Assert.DoesNotContain("safetensors", err);
    }

    [Theory]
    [InlineData("--api-key", "", "empty")]
    [InlineData("--shutdown-timeout", "-1", "--shutdown-timeout")]
    [InlineData("--cors", "not an origin", "not an origin")]
    public void BadServeOptions_AreReportedBeforeTheWeightsLoad(string option, string value, string named)
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("serve", "--model", WeightlessModel(dir), "--port", "0", option, value);
        Assert.Equal(1, code);
        Assert.Contains(named, err);
        Assert.DoesNotContain("safetensors", err);
    }

    [Fact]
    public void ApiKeyFile_IsRead_AndAnEmptyFileIsAnError()
    {
        using var dir = new TempDir();
        string file = dir.File("key");
        File.WriteAllText(file, "  secret-key\n");
        Assert.Equal("secret-key", DeepSeekSharp.Cli.ServeCommand.ApiKey(new FileInfo(file), null));
        File.WriteAllText(file, "\n");
        var e = Assert.Throws<ArgumentException>(() => DeepSeekSharp.Cli.ServeCommand.ApiKey(new FileInfo(file), null));
        Assert.Contains("empty", e.Message);
        Assert.Throws<ArgumentException>(() => DeepSeekSharp.Cli.ServeCommand.ApiKey(new FileInfo(file), "also-a-flag"));
    }
}
