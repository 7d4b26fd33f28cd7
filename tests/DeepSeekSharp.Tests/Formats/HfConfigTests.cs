using System.Text.Json.Nodes;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Tests.Formats;

public class HfConfigTests
{
    private static JsonObject Golden(string name) => JsonNode.Parse(File.ReadAllText(GoldenCase.DataPath(name, "config.json")))!.AsObject();

    private static Exception ParseFails(JsonObject o) => Record.Exception(() => HfConfig.Parse(o.ToJsonString()))!;

    [Fact]
    public void Parse_V3Tiny_ReadsEveryRoutingAndRopeField()
    {
        ModelConfig c = HfConfig.Parse(Golden("v3-tiny").ToJsonString());
        Assert.Equal((64, 3, 1, 4, 48, 32, 16, 16, 16), (c.Dim, c.NLayers, c.NDenseLayers, c.NHeads, c.QLoraRank, c.KvLoraRank, c.QkNopeHeadDim, c.QkRopeHeadDim, c.VHeadDim));
        Assert.Equal((16, 1, 4, 4, 2), (c.NRoutedExperts, c.NSharedExperts, c.NActivatedExperts, c.NExpertGroups, c.NLimitedGroups));
        Assert.Equal((TopkMethod.NoAuxTc, ScoreFunc.Sigmoid, true, 2.5), (c.TopkMethod, c.ScoreFunc, c.NormTopkProb, c.RouteScale));
        Assert.Equal(new YarnScaling(4, 32, 32, 1, 1, 1), c.Yarn);
        Assert.Equal(1, c.NMtpLayers);
        Assert.True(c.HasRouterBias);
    }

    [Fact]
    public void Parse_V2WithoutNextnField_ReadsZeroMtpLayersAndPlainQProj()
    {
        ModelConfig c = HfConfig.Parse(Golden("v2-lite-tiny").ToJsonString());
        Assert.Equal(0, c.NMtpLayers);
        Assert.False(c.HasQLora);
        Assert.Equal((TopkMethod.Greedy, ScoreFunc.Softmax, false), (c.TopkMethod, c.ScoreFunc, c.NormTopkProb));
    }

    [Fact]
    public void Parse_Fp8QuantizationConfig_ReadsBlockSize()
    {
        Assert.Equal((128, 128), HfConfig.Parse(Golden("v3-fp8-tiny").ToJsonString()).Fp8BlockSize);
    }

    [Fact]
    public void Parse_UnknownModelType_ThrowsNamingTheTypeAndSupported()
    {
        JsonObject o = Golden("v3-tiny");
        o["model_type"] = "llama";
        Exception e = ParseFails(o);
        Assert.IsType<NotSupportedException>(e);
        Assert.Contains("model_type 'llama'", e.Message);
        Assert.Contains("deepseek_v2, deepseek_v3", e.Message);
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("kv_lora_rank")]
    [InlineData("num_hidden_layers")]
    [InlineData("moe_intermediate_size")]
    [InlineData("model_type")]
    public void Parse_MissingRequiredField_ThrowsNamingTheField(string field)
    {
        JsonObject o = Golden("v3-tiny");
        o.Remove(field);
        Exception e = ParseFails(o);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains($"'{field}' is missing", e.Message);
    }

    [Fact]
    public void Parse_GroupCountNotDividingExperts_ThrowsNamingNGroup()
    {
        JsonObject o = Golden("v3-tiny");
        o["n_group"] = 3;
        Exception e = ParseFails(o);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("n_group (3) must divide n_routed_experts (16)", e.Message);
    }

    [Theory]
    [InlineData("topk_group", 5, "topk_group (5) must be in [1, n_group = 4]")]
    [InlineData("num_experts_per_tok", 17, "num_experts_per_tok (17) must be in [1, n_routed_experts = 16]")]
    [InlineData("first_k_dense_replace", 4, "first_k_dense_replace (4) must be in [0, num_hidden_layers = 3]")]
    [InlineData("qk_rope_head_dim", 15, "qk_rope_head_dim (15) must be even")]
    [InlineData("hidden_size", 0, "hidden_size (0) must be > 0")]
    public void Parse_InconsistentValue_ThrowsNamingTheField(string field, int value, string message)
    {
        JsonObject o = Golden("v3-tiny");
        o[field] = value;
        Assert.Contains(message, ParseFails(o).Message);
    }

    [Fact]
    public void Parse_WrongJsonType_ThrowsNamingTheField()
    {
        JsonObject o = Golden("v3-tiny");
        o["hidden_size"] = "sixty-four";
        Exception e = ParseFails(o);
        Assert.Contains("'hidden_size' must be an integer", e.Message);
    }

    [Theory]
    [InlineData("topk_method", "random", "topk_method 'random'")]
    [InlineData("scoring_func", "relu", "scoring_func 'relu'")]
    [InlineData("hidden_act", "gelu", "hidden_act 'gelu'")]
    public void Parse_UnsupportedChoice_ThrowsNamingValue(string field, string value, string message)
    {
        JsonObject o = Golden("v3-tiny");
        o[field] = value;
        Exception e = ParseFails(o);
        Assert.IsType<NotSupportedException>(e);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Parse_UnsupportedRopeScalingType_ThrowsNamingIt()
    {
        JsonObject o = Golden("v3-tiny");
        o["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 2 };
        Assert.Contains("rope_scaling.type 'linear'", ParseFails(o).Message);
    }

    [Fact]
    public void Parse_NotJson_ThrowsInvalidData()
    {
        Assert.Contains("config.json: not valid JSON", Record.Exception(() => HfConfig.Parse("{ nope"))!.Message);
    }
}
