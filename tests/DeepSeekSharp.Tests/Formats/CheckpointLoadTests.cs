using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Model;
using static DeepSeekSharp.Tests.SafeTensorsWriter;

namespace DeepSeekSharp.Tests.Formats;

/// <summary>Loading a model folder whose tensors do not fit its config.</summary>
public class CheckpointLoadTests
{
    private static Exception LoadFails(string dir) => Record.Exception(() => DeepSeekModel.Load(dir))!;

    private static void Rewrite(string file, Func<List<Entry>, IEnumerable<Entry>> change)
    {
        List<Entry> entries = ReadAll(file);
        Write(file, change(entries).ToList());
    }

    [Fact]
    public void Load_MissingTensor_ThrowsNamingTensorAndExpectedShape()
    {
        using TempDir dir = TempDir.CopyOf("v2-lite-tiny");
        const string name = "model.layers.1.self_attn.kv_b_proj.weight";
        Rewrite(dir.File("model.safetensors"), es => es.Where(e => e.Name != name));
        Exception e = LoadFails(dir.Path);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains($"tensor '{name}' is missing", e.Message);
        Assert.Contains("expected shape [112, 32]", e.Message); // 4 heads x (16 + 12), kv_lora_rank 32
    }

    [Fact]
    public void Load_TensorShapeNotMatchingConfig_ThrowsWithExpectedAndFound()
    {
        using TempDir dir = TempDir.CopyOf("v2-lite-tiny");
        const string name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"; // [32 + 8, 48]
        Rewrite(dir.File("model.safetensors"), es => es.Select(e => e.Name == name ? e with { Shape = [48, 40] } : e));
        Exception e = LoadFails(dir.Path);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains($"model.safetensors: tensor '{name}' has shape [48, 40]; expected [40, 48]", e.Message);
        Assert.Contains("kv_lora_rank 32 + qk_rope_head_dim 8", e.Message);
    }

    [Fact]
    public void Load_ShardIndexPointsAtMissingFile_ThrowsNamingTheShard()
    {
        using TempDir dir = TempDir.CopyOf("v2-grouped-tiny");
        File.Delete(dir.File("model-00002-of-00002.safetensors"));
        Exception e = LoadFails(dir.Path);
        Assert.IsType<FileNotFoundException>(e);
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void Load_ShardIndexNamesTensorAbsentFromShard_ThrowsNamingBoth()
    {
        using TempDir dir = TempDir.CopyOf("v2-grouped-tiny");
        JsonNode index = JsonNode.Parse(File.ReadAllText(dir.File("model.safetensors.index.json")))!;
        index["weight_map"]!["model.layers.9.bogus.weight"] = "model-00001-of-00002.safetensors";
        File.WriteAllText(dir.File("model.safetensors.index.json"), index.ToJsonString());
        Exception e = LoadFails(dir.Path);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("'model.layers.9.bogus.weight'", e.Message);
        Assert.Contains("model-00001-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void Load_Fp8WeightWithoutScale_ThrowsNamingTheScaleTensor()
    {
        using TempDir dir = TempDir.CopyOf("v3-fp8-tiny");
        const string scale = "model.layers.0.self_attn.q_a_proj.weight_scale_inv";
        Rewrite(dir.File("model.safetensors"), es => es.Where(e => e.Name != scale));
        Exception e = LoadFails(dir.Path);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains($"'{scale}' is missing", e.Message);
        Assert.Contains("[1, 2]", e.Message); // ceil(96/128) x ceil(160/128)
    }

    [Fact]
    public void Load_Fp8ScaleWithWrongBlockGrid_ThrowsWithExpectedGrid()
    {
        using TempDir dir = TempDir.CopyOf("v3-fp8-tiny");
        const string scale = "model.layers.0.self_attn.q_a_proj.weight_scale_inv";
        Rewrite(dir.File("model.safetensors"), es => es.Select(e => e.Name == scale ? e with { Shape = [2, 1] } : e));
        Exception e = LoadFails(dir.Path);
        Assert.Contains($"'{scale}' has shape [2, 1]; expected [1, 2]", e.Message);
    }

    [Fact]
    public void Load_CheckpointWithoutMtpWeights_LoadsWithoutMtp()
    {
        using TempDir dir = TempDir.CopyOf("v3-tiny");
        Rewrite(dir.File("model.safetensors"), es => es.Where(e => !e.Name.StartsWith("model.layers.3.", StringComparison.Ordinal)));
        DeepSeekModel m = DeepSeekModel.Load(dir.Path);
        Assert.Equal(0, m.MtpLayers);
        using InferenceSession s = m.CreateSession();
        GoldenCase g = GoldenCase.Load("v3-tiny");
        Compare.Close(s.Forward(g.PromptIds).AsSpan((g.PromptIds.Length - 1) * 256), g.PrefillLastLogits, 1e-4, "prefill without MTP");
        var ex = Assert.Throws<InvalidOperationException>(() => s.ForwardMtp([1], new float[64], new float[256]));
        Assert.Contains("no multi-token-prediction weights", ex.Message);
    }

    [Fact]
    public void Load_NoSafetensors_ThrowsNamingTheFolder()
    {
        using var dir = new TempDir();
        File.Copy(GoldenCase.DataPath("v3-tiny", "config.json"), dir.File("config.json"));
        Exception e = LoadFails(dir.Path);
        Assert.IsType<FileNotFoundException>(e);
        Assert.Contains("no model.safetensors", e.Message);
    }
}
