using System.Text.Json;

namespace DeepSeekSharp.Tests.Cli;

public class LogitsCommandTests
{
    private static float[][] Rows(JsonElement e) =>
        e.EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToArray();

    private static JsonElement Logits(params string[] args)
    {
        var (code, stdout, stderr) = CliRunner.Run(["logits", .. args]);
        Assert.True(code == 0, stderr);
        return JsonDocument.Parse(stdout).RootElement;
    }

    [Theory]
    [InlineData("v3-tiny", null, null)]
    [InlineData("v2-lite-tiny", "12", "absorbed")]
    [InlineData("v2-grouped-tiny", "5", "expanded")]
    [InlineData("v3-fp8-tiny", "1", null)]
    public void Logits_PromptAndDecodeSteps_MatchGolden(string name, string? decodeFrom, string? attention)
    {
        GoldenCase g = GoldenCase.Load(name);
        int[] all = [.. g.PromptIds, .. g.Decode.Select(d => d.InputId)];
        List<string> args = ["--model", g.Directory, "--tokens", string.Join(",", all)];
        if (decodeFrom is not null) args.AddRange(["--decode-from", decodeFrom]);
        if (attention is not null) args.AddRange(["--attention", attention]);
        float[][] rows = Rows(Logits([.. args]).GetProperty("logits"));
        Assert.Equal(all.Length, rows.Length);
        for (int p = 0; p < g.PromptIds.Length; p++) Compare.Close(rows[p], g.PerPositionLogits[p], 1e-4, $"row {p}");
        for (int i = 0; i < g.Decode.Length; i++) Compare.Close(rows[g.PromptIds.Length + i], g.Decode[i].Logits, 1e-4, $"decode {i}");
    }

    [Fact]
    public void Logits_WithMtp_PrintsDraftLogitsForEveryPositionButTheLast()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        JsonElement j = Logits("--model", g.Directory, "--tokens", string.Join(",", g.PromptIds), "--mtp", "--decode-from", "4");
        float[][] mtp = Rows(j.GetProperty("mtp_logits"));
        Assert.Equal(g.PromptIds.Length - 1, mtp.Length);
        foreach (var (position, _, expected) in g.Mtp) Compare.Close(mtp[position], expected, 1e-4, $"mtp {position}");
    }

    [Theory]
    [InlineData("1,x,3", "'x' (item 2) is not a non-negative integer token id")]
    [InlineData("1,999", "token id 999 at index 1 is outside the vocabulary [0, 256)")]
    public void Logits_BadTokens_FailWithMessageNamingTheToken(string tokens, string message)
    {
        var (code, _, stderr) = CliRunner.Run("logits", "--model", GoldenCase.DataPath("v3-tiny"), "--tokens", tokens);
        Assert.Equal(1, code);
        Assert.Contains(message, stderr);
    }

    [Fact]
    public void Logits_MtpOnModelWithoutMtp_FailsNamingTheProblem()
    {
        var (code, _, stderr) = CliRunner.Run("logits", "--model", GoldenCase.DataPath("v2-lite-tiny"), "--tokens", "1,2", "--mtp");
        Assert.Equal(1, code);
        Assert.Contains("no multi-token-prediction weights", stderr);
    }

    [Fact]
    public void Logits_DecodeFromBeyondTokenCount_FailsNamingTheOption()
    {
        var (code, _, stderr) = CliRunner.Run("logits", "--model", GoldenCase.DataPath("v3-tiny"), "--tokens", "1,2", "--decode-from", "3");
        Assert.Equal(1, code);
        Assert.Contains("--decode-from must be in [1, 2]", stderr);
    }

    [Fact]
    public void Logits_MoreTokensThanContext_FailsNamingMaxPositionEmbeddings()
    {
        string tokens = string.Join(",", Enumerable.Repeat("5", 129)); // v3-tiny: max_position_embeddings 128
        var (code, _, stderr) = CliRunner.Run("logits", "--model", GoldenCase.DataPath("v3-tiny"), "--tokens", tokens);
        Assert.Equal(1, code);
        Assert.Contains("max_position_embeddings (128)", stderr);
    }
}
