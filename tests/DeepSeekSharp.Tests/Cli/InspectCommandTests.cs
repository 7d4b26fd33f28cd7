using System.Text.Json;

namespace DeepSeekSharp.Tests.Cli;

public class InspectCommandTests
{
    private static JsonElement InspectJson(string dir)
    {
        var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", dir, "--json");
        Assert.True(code == 0, stderr);
        return JsonDocument.Parse(stdout).RootElement;
    }

    [Fact]
    public void Inspect_DeepSeekV3Config_Reports671BTotal37BActiveAnd576LatentValues()
    {
        JsonElement j = InspectJson(GoldenCase.DataPath("configs", "deepseek-v3"));
        // Independently: 61 layers of MLA 187.1M, 3 dense MLPs of 3·7168·18432, 58 MoE layers of 257 experts of
        // 3·7168·2048 plus router, 2·129280·7168 embedding + head: 671.03B; 8 routed + 1 shared expert active: 37.55B.
        Assert.Equal(671_026_419_200, j.GetProperty("total_parameters").GetInt64());
        Assert.Equal(37_552_297_472, j.GetProperty("active_parameters").GetInt64());
        Assert.Equal(576, j.GetProperty("kv_cache").GetProperty("latent_values_per_token_per_layer").GetInt32());
        Assert.Equal(128 * (192 + 128), j.GetProperty("kv_cache").GetProperty("mha_values_per_token_per_layer").GetInt32());
        Assert.Equal("noaux_tc", j.GetProperty("topk_method").GetString());
        Assert.Equal(58, j.GetProperty("moe_layers").GetInt32());
    }

    [Theory]
    [InlineData("deepseek-v2", 235.0e9, 237.0e9, 20.5e9, 22.0e9)]   // DeepSeek-V2: 236B total, 21B active
    [InlineData("deepseek-v2-lite", 15.5e9, 16.0e9, 2.3e9, 2.8e9)] // V2-Lite: 15.7B total, 2.4B active (+ embeddings)
    public void Inspect_ReleasedV2Configs_ReportPublishedSizes(string name, double minTotal, double maxTotal, double minActive, double maxActive)
    {
        JsonElement j = InspectJson(GoldenCase.DataPath("configs", name));
        Assert.InRange(j.GetProperty("total_parameters").GetInt64(), minTotal, maxTotal);
        Assert.InRange(j.GetProperty("active_parameters").GetInt64(), minActive, maxActive);
    }

    [Fact]
    public void Inspect_Fp8Checkpoint_ListsTheDTypesFound()
    {
        JsonElement dtypes = InspectJson(GoldenCase.DataPath("v3-fp8-tiny")).GetProperty("weight_dtypes");
        Assert.True(dtypes.GetProperty("F8_E4M3").GetInt32() > 0);
        Assert.True(dtypes.GetProperty("BF16").GetInt32() > 0);
        Assert.True(dtypes.GetProperty("F32").GetInt32() > 0);
    }

    [Fact]
    public void Inspect_TextOutput_ShowsRoutingAndCacheComparison()
    {
        var (code, stdout, _) = CliRunner.Run("inspect", "--model", GoldenCase.DataPath("v2-grouped-tiny"));
        Assert.Equal(0, code);
        Assert.Contains("group_limited_greedy", stdout);
        Assert.Contains("latent 40 values/layer", stdout); // kv_lora 32 + rope 8
        Assert.Contains("F16", stdout);
    }

    [Fact]
    public void Inspect_MissingFolder_FailsWithOneLineError()
    {
        var (code, _, stderr) = CliRunner.Run("inspect", "--model", "/no/such/folder");
        Assert.Equal(1, code);
        Assert.StartsWith("error: ", stderr);
        Assert.Contains("/no/such/folder", stderr);
    }
}
