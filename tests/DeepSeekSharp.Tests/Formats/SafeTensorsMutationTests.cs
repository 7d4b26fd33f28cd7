using DeepSeekSharp.Formats.SafeTensors;

namespace DeepSeekSharp.Tests.Formats;

/// <summary>Corrupted files must fail with an error that names the file, never with an unrelated exception.</summary>
public class SafeTensorsMutationTests
{
    [Fact]
    public void RandomlyCorruptedHeaders_OpenOrFailWithAClearError()
    {
        byte[] original = File.ReadAllBytes(GoldenCase.DataPath("v2-lite-tiny", "model.safetensors"));
        long headerLength = BitConverter.ToInt64(original, 0);
        var rng = new Random(12345);
        using var dir = new TempDir();
        string path = dir.File("model.safetensors");
        int opened = 0, refused = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            byte[] bytes = (byte[])original.Clone();
            int edits = 1 + rng.Next(4);
            for (int e = 0; e < edits; e++)
            {
                // Mostly inside the length field and the JSON header, sometimes a truncation.
                if (rng.Next(10) == 0) { bytes = bytes[..rng.Next(bytes.Length)]; continue; }
                int at = rng.Next((int)Math.Min(8 + headerLength, bytes.Length));
                bytes[at] = (byte)rng.Next(256);
            }
            File.WriteAllBytes(path, bytes);
            try
            {
                using SafeTensorsFile f = SafeTensorsFile.Open(path);
                opened++;
            }
            catch (Exception ex) when (ex is InvalidDataException or NotSupportedException)
            {
                Assert.Contains("model.safetensors", ex.Message);
                refused++;
            }
        }
        Assert.True(refused > 100, $"only {refused} of 300 corruptions were refused");
        Assert.Equal(300, opened + refused);
    }

    [Fact]
    public void CorruptedConfigValues_ParseOrFailNamingConfigJson()
    {
        string[] fields = ["hidden_size", "num_hidden_layers", "kv_lora_rank", "n_routed_experts", "num_experts_per_tok", "n_group", "topk_group",
            "qk_rope_head_dim", "first_k_dense_replace", "moe_intermediate_size", "vocab_size", "max_position_embeddings"];
        object[] values = [0, -1, 1, 3, 7, 1_000_000, 2.5, "x", true];
        foreach (string field in fields)
            foreach (object value in values)
            {
                var o = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(GoldenCase.DataPath("v3-tiny", "config.json")))!.AsObject();
                o[field] = System.Text.Json.JsonSerializer.SerializeToNode(value);
                try
                {
                    DeepSeekSharp.Formats.HfConfig.Parse(o.ToJsonString());
                }
                catch (Exception ex) when (ex is InvalidDataException or NotSupportedException)
                {
                    Assert.True(ex.Message.StartsWith("config.json", StringComparison.Ordinal) && ex.Message.Contains(field), $"{field}={value}: {ex.Message}");
                }
            }
    }
}
