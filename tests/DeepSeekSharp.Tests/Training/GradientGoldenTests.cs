using Xunit.Abstractions;
using System.Text.Json;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>One training step of the golden checkpoints against the float64 reference (torch autograd through
/// DeepSeek's model.py modules): every loss component, every parameter's gradient, the routing it decided on, the
/// gradient of each loss component alone at the routers, and the loads the bias rule uses.</summary>
public class GradientGoldenTests(ITestOutputHelper output)
{
    private static string Data(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "data", .. parts]);

    /// <summary>The golden batch as the trainer takes it: tokens [B·T] and each position's target (−1 at the end).</summary>
    internal static (int Batch, int SeqLen, int[] Tokens, int[] Targets) Batch(string name)
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(Data("train", name, "batch.json")));
        int[][] ids = [.. doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetInt32()).ToArray())];
        int b = ids.Length, t = ids[0].Length;
        int[] tokens = [.. ids.SelectMany(r => r)];
        int[] targets = [.. ids.SelectMany(r => r.Skip(1).Append(-1))];
        return (b, t, tokens, targets);
    }

    private sealed record Run(TrainingModel Model, ParameterSet Params, BatchLoss Loss);

    private static Run Step(string name, LossWeights weights)
    {
        var (b, t, tokens, targets) = Batch(name);
        var ps = new ParameterSet(DeepSeekSharp.Formats.HfConfig.Load(Data(name)));
        ps.Load(Data(name));
        var model = new TrainingModel(ps, b, t);
        BatchLoss loss = model.Step(tokens, targets, weights, gradients: true);
        return new Run(model, ps, loss);
    }

    private static LossWeights Weights(JsonElement loss) => new()
    {
        Balance = loss.GetProperty("alpha").GetDouble(),
        Mtp = loss.TryGetProperty("lambda", out JsonElement l) ? l.GetDouble() : 0,
    };

    [Theory]
    [InlineData("v3-tiny")]
    [InlineData("v2-lite-tiny")]
    public void Step_MatchesReferenceLossesGradientsAndRouting(string name)
    {
        using JsonDocument batchDoc = JsonDocument.Parse(File.ReadAllText(Data("train", name, "batch.json")));
        using JsonDocument expectedDoc = JsonDocument.Parse(File.ReadAllText(Data("train", name, "expected.json")));
        JsonElement expected = expectedDoc.RootElement, losses = expected.GetProperty("losses");
        Run run = Step(name, Weights(batchDoc.RootElement.GetProperty("loss")));

        void Loss(string what, double actual)
        {
            double want = losses.GetProperty(what).GetDouble();
            Assert.True(Math.Abs(actual - want) <= 1e-5 * Math.Abs(want), $"{what}: {actual} vs {want}");
        }
        Loss("main_ce", run.Loss.MainCe);
        Loss("balance", run.Loss.Balance);
        Loss("total", run.Loss.Total);
        if (losses.TryGetProperty("mtp_ce", out _))
        {
            Loss("mtp_ce", run.Loss.MtpCe);
            Loss("mtp_loss", 0.3 * run.Loss.MtpCe);
        }

        // Routing: the chosen expert sets of every MoE layer and token.
        var blocks = run.Model.Blocks.Where(x => x.IsMoe).ToDictionary(x => x.Layer);
        foreach (JsonElement layer in expected.GetProperty("routing").EnumerateArray())
        {
            TrainingBlock block = blocks[layer.GetProperty("layer").GetInt32()];
            int k = run.Params.Config.NActivatedExperts, t = 0;
            foreach (JsonElement token in layer.GetProperty("experts").EnumerateArray())
            {
                int[] want = [.. token.EnumerateArray().Select(e => e.GetInt32()).Order()];
                int[] got = [.. block.Chosen.Slice(t * k, k).ToArray().Order()];
                Assert.True(want.SequenceEqual(got), $"layer {block.Layer} token {t}: experts [{string.Join(",", got)}], reference [{string.Join(",", want)}]");
                t++;
            }
        }

        // Gradients: every tensor within 1e-4 of the reference relative to its largest element; unused experts exactly 0.
        var grads = F64SafeTensors.Read(Data("train", name, "grads.safetensors"));
        Assert.Equal(grads.Count, run.Params.Tensors.Count);
        var zero = expected.GetProperty("zero_gradient_tensors").EnumerateArray().Select(e => e.GetString()!).ToHashSet();
        double worst = 0;
        foreach (var (tensor, (want, _)) in grads)
        {
            ReadOnlySpan<float> got = run.Params.Grad(run.Params[tensor]);
            if (zero.Contains(tensor))
            {
                Assert.True(got.IndexOfAnyExcept(0f) < 0, $"{tensor}: an expert no token chose must have a zero gradient");
                continue;
            }
            double rel = Compare.MaxRelative(got, want);
            worst = Math.Max(worst, rel);
            Assert.True(rel <= 1e-4, $"{tensor}: max |ours − ref| / max |ref| = {rel:E2}");
        }
        Assert.True(worst > 0); // the comparison ran on real values
        output.WriteLine($"{name}: losses main {run.Loss.MainCe:R}, mtp {run.Loss.MtpCe:R}, balance {run.Loss.Balance:R}; worst gradient {worst:E2}");
    }

    [Theory]
    [InlineData("v3-tiny")]
    [InlineData("v2-lite-tiny")]
    public void EachLossComponentAlone_GivesTheReferenceRouterGradients(string name)
    {
        using JsonDocument batchDoc = JsonDocument.Parse(File.ReadAllText(Data("train", name, "batch.json")));
        LossWeights full = Weights(batchDoc.RootElement.GetProperty("loss"));
        var reference = F64SafeTensors.Read(Data("train", name, "router_grads_by_component.safetensors"));
        var components = new Dictionary<string, LossWeights>
        {
            ["main_ce"] = full with { Mtp = 0, Balance = 0 },
            ["balance"] = full with { Main = 0, Mtp = 0 },
        };
        if (full.Mtp > 0) components["mtp_loss"] = full with { Main = 0, Balance = 0 };
        foreach (var (component, weights) in components)
        {
            Run run = Step(name, weights);
            var mine = reference.Where(r => r.Key.StartsWith(component + ":", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(mine);
            foreach (var (key, (want, _)) in mine)
            {
                string tensor = key[(component.Length + 1)..];
                ReadOnlySpan<float> got = run.Params.Grad(run.Params[tensor]);
                if (want.All(x => x == 0))
                {
                    // e.g. the MTP layer's router under the main cross-entropy alone: nothing reaches it.
                    Assert.True(got.IndexOfAnyExcept(0f) < 0, $"{component} alone, {tensor}: the reference gradient is exactly 0");
                    continue;
                }
                double rel = Compare.MaxRelative(got, want);
                Assert.True(rel <= 1e-4, $"{component} alone, {tensor}: max |ours − ref| / max |ref| = {rel:E2}");
            }
        }
    }

    [Fact]
    public void ExpertLoads_AreTheOnesTheBiasRuleUses_AndTheUpdateMatches()
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(Data("train", "v3-tiny", "bias_update.json")));
        Run run = Step("v3-tiny", new LossWeights());
        var loads = run.Model.ExpertLoads.ToDictionary(l => l.Layer, l => l.Loads);
        float gamma = (float)doc.RootElement.GetProperty("gamma").GetDouble();
        foreach (JsonElement layer in doc.RootElement.GetProperty("layers").EnumerateArray())
        {
            int l = layer.GetProperty("layer").GetInt32();
            int[] want = [.. layer.GetProperty("load").EnumerateArray().Select(e => e.GetInt32())];
            Assert.Equal(want, loads[l]);
            Span<float> bias = run.Params.RouterBias(l);
            BiasBalancing.Update(bias, loads[l], gamma);
            double[] after = [.. layer.GetProperty("bias_after").EnumerateArray().Select(e => e.GetDouble())];
            for (int i = 0; i < after.Length; i++) Assert.True(Math.Abs(bias[i] - after[i]) <= 1e-7, $"layer {l} bias[{i}]: {bias[i]} vs {after[i]}");
        }
    }
}
