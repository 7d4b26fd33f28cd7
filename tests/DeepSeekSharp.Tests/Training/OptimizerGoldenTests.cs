using System.Text.Json;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>AdamW and the auxiliary-loss-free bias update against the training golden data (torch.optim.AdamW on the
/// reference gradients; DeepSeek-V3's sign rule on the reference loads).</summary>
public class OptimizerGoldenTests
{
    private static string Data(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "data", .. parts]);

    [Theory]
    [InlineData("v3-tiny")]
    [InlineData("v2-lite-tiny")]
    public void AdamWStep_OnReferenceGradients_MatchesTorch(string name)
    {
        using JsonDocument cfg = JsonDocument.Parse(File.ReadAllText(Data("train", name, "adamw.json")));
        JsonElement c = cfg.RootElement;
        var opt = new AdamW
        {
            Beta1 = c.GetProperty("betas")[0].GetDouble(), Beta2 = c.GetProperty("betas")[1].GetDouble(),
            Eps = c.GetProperty("eps").GetDouble(), WeightDecay = c.GetProperty("weight_decay").GetDouble(),
        };
        double lr = c.GetProperty("lr").GetDouble();
        var decayed = c.GetProperty("decayed").EnumerateArray().Select(e => e.GetString()!).ToHashSet();
        var notDecayed = c.GetProperty("not_decayed").EnumerateArray().Select(e => e.GetString()!).ToHashSet();
        var grads = F64SafeTensors.Read(Data("train", name, "grads.safetensors"));
        var after = F64SafeTensors.Read(Data("train", name, "params_after_adamw.safetensors"));
        using SafeTensorsFile model = SafeTensorsFile.Open(Data(name, "model.safetensors"));
        Assert.Equal(grads.Count, decayed.Count + notDecayed.Count);
        foreach (var (tensor, (g, _)) in grads)
        {
            TensorInfo info = model.Tensors[tensor];
            var p = new float[g.Length];
            NumberFormats.ToFloat(info.Format, model.GetBytes(info), p);
            float[] m = new float[p.Length], v = new float[p.Length];
            opt.Step(p, g, m, v, t: 1, lr, decay: decayed.Contains(tensor));
            float[] expected = after[tensor].Values;
            // The golden data: float32 AdamW on the reference gradients lands within 2.2e-7 of the float64 step.
            for (int i = 0; i < p.Length; i++)
                Assert.True(Math.Abs(p[i] - expected[i]) <= 1e-6, $"{tensor}[{i}]: {p[i]} vs {expected[i]}");
        }
    }

    [Fact]
    public void AdamW_DecaysOnlyWhenAsked_AndFollowsBiasCorrectionOverSteps()
    {
        // Two steps on one value by hand: g = 0.5 then -0.25, lr 0.1, betas (0.9, 0.95), wd 0.1.
        var opt = new AdamW { Beta1 = 0.9, Beta2 = 0.95, Eps = 1e-8, WeightDecay = 0.1 };
        float[] p = [1f], m = [0f], v = [0f];
        opt.Step(p, [0.5f], m, v, 1, 0.1, decay: true);
        double m1 = 0.05, v1 = 0.05 * 0.25, p1 = 1 * (1 - 0.01) - 0.1 / 0.1 * m1 / (Math.Sqrt(v1) / Math.Sqrt(0.05) + 1e-8);
        Assert.Equal(p1, p[0], 1e-6);
        opt.Step(p, [-0.25f], m, v, 2, 0.1, decay: true);
        double m2 = 0.9 * m1 + 0.1 * -0.25, v2 = 0.95 * v1 + 0.05 * 0.0625;
        double p2 = p1 * (1 - 0.01) - 0.1 / (1 - 0.81) * m2 / (Math.Sqrt(v2) / Math.Sqrt(1 - 0.9025) + 1e-8);
        Assert.Equal(p2, p[0], 1e-6);
        float[] q = [1f], mq = [0f], vq = [0f];
        opt.Step(q, [0f], mq, vq, 1, 0.1, decay: false);
        Assert.Equal(1f, q[0]); // no gradient and no decay: unchanged
    }

    [Fact]
    public void BiasUpdate_OnReferenceLoads_MatchesV3Rule()
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(Data("train", "v3-tiny", "bias_update.json")));
        float gamma = (float)doc.RootElement.GetProperty("gamma").GetDouble();
        foreach (JsonElement layer in doc.RootElement.GetProperty("layers").EnumerateArray())
        {
            int[] load = [.. layer.GetProperty("load").EnumerateArray().Select(e => e.GetInt32())];
            float[] bias = [.. layer.GetProperty("bias_before").EnumerateArray().Select(e => (float)e.GetDouble())];
            double[] expected = [.. layer.GetProperty("bias_after").EnumerateArray().Select(e => e.GetDouble())];
            BiasBalancing.Update(bias, load, gamma);
            for (int i = 0; i < bias.Length; i++) Assert.Equal(expected[i], bias[i], 1e-7); // float32 rounding of b ± γ
        }
    }

    [Fact]
    public void BiasUpdate_ExpertAtTheMean_KeepsItsBias()
    {
        float[] bias = [0.5f, 0.5f, 0.5f];
        BiasBalancing.Update(bias, [1, 2, 3], 0.25f); // mean 2
        Assert.Equal([0.75f, 0.5f, 0.25f], bias);
    }
}
