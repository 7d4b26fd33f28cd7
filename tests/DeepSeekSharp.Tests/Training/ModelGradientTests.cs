using DeepSeekSharp.Model;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>The whole model's backward pass against finite differences of its own forward, tensor by tensor, on
/// shapes chosen to be awkward (odd widths, heads of different q/k/v sizes, experts not a power of two) — this covers
/// what has no separate kernel: causal attention, the routers (sigmoid with normalisation and groups, softmax), the
/// balance loss and the MTP wiring. Plus: micro-batches accumulate to the gradient of the whole batch.</summary>
public class ModelGradientTests
{
    internal static ModelConfig V3Odd => new()
    {
        ModelType = "deepseek_v3", VocabSize = 37, Dim = 20, InterDim = 11, MoeInterDim = 5, NLayers = 2, NDenseLayers = 1,
        NHeads = 3, NRoutedExperts = 6, NSharedExperts = 1, NActivatedExperts = 2, NExpertGroups = 2, NLimitedGroups = 1,
        TopkMethod = TopkMethod.NoAuxTc, ScoreFunc = ScoreFunc.Sigmoid, NormTopkProb = true, RouteScale = 2.5, QLoraRank = 9,
        KvLoraRank = 7, QkNopeHeadDim = 6, QkRopeHeadDim = 4, VHeadDim = 5, Yarn = new YarnScaling(4, 4, 32, 1, 1, 1),
        MaxPositionEmbeddings = 64, NMtpLayers = 1,
    };

    private static ModelConfig V2Odd => new()
    {
        ModelType = "deepseek_v2", VocabSize = 29, Dim = 18, InterDim = 13, MoeInterDim = 7, NLayers = 2, NDenseLayers = 1,
        NHeads = 2, NRoutedExperts = 5, NSharedExperts = 2, NActivatedExperts = 2, TopkMethod = TopkMethod.Greedy,
        ScoreFunc = ScoreFunc.Softmax, RouteScale = 1.0, KvLoraRank = 11, QkNopeHeadDim = 5, QkRopeHeadDim = 6, VHeadDim = 3,
        MaxPositionEmbeddings = 64, TieWordEmbeddings = true,
    };

    internal static (ParameterSet Ps, TrainingModel Model, int[] Tokens, int[] Targets) Setup(ModelConfig c, int batch, int seqLen, ulong seed)
    {
        var ps = new ParameterSet(c);
        ps.Initialize(seed, embeddingStd: 0.5);
        var rng = new DeepSeekSharp.Tensors.Rng(seed + 1);
        foreach (int layer in ps.BiasLayers)
            for (int i = 0; i < ps.RouterBias(layer).Length; i++) ps.RouterBias(layer)[i] = (float)(rng.NextDouble() * 0.2 - 0.1);
        int[] tokens = new int[batch * seqLen], targets = new int[batch * seqLen];
        for (int i = 0; i < tokens.Length; i++) tokens[i] = (int)(rng.NextUInt64() % (ulong)c.VocabSize);
        for (int i = 0; i < tokens.Length; i++) targets[i] = (i + 1) % seqLen == 0 || i % 5 == 3 ? -1 : tokens[i + 1]; // some masked
        return (ps, new TrainingModel(ps, batch, seqLen), tokens, targets);
    }

    /// <summary>Each loss term alone, so that a small term's mistakes are not hidden by a large one's gradient.</summary>
    public static TheoryData<string, string> Cases => new()
    {
        { "v3", "main" }, { "v3", "mtp" }, { "v3", "balance" }, { "v2", "main" }, { "v2", "balance" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryTensorsGradient_MatchesFiniteDifferencesOfTheLoss(string which, string term)
    {
        ModelConfig c = which == "v3" ? V3Odd : V2Odd;
        var (ps, model, tokens, targets) = Setup(c, batch: 2, seqLen: 7, seed: 11);
        var weights = term switch
        {
            "main" => new LossWeights { Main = 1, Mtp = 0, Balance = 0 },
            "mtp" => new LossWeights { Main = 0, Mtp = 1, Balance = 0 },
            _ => new LossWeights { Main = 0, Mtp = 0, Balance = 1 },
        };
        Array.Clear(ps.Grads);
        model.Step(tokens, targets, weights, gradients: true);
        float[] grad = (float[])ps.Grads.Clone();
        var rng = new Random(3);
        foreach (Parameter p in ps.Tensors)
        {
            // The derivative along a random unit direction inside this tensor, by central differences in float32.
            double[] u = [.. Enumerable.Range(0, p.Length).Select(_ => rng.NextDouble() * 2 - 1)];
            double norm = Math.Sqrt(u.Sum(x => x * x));
            double analytic = 0;
            for (int i = 0; i < p.Length; i++) analytic += grad[p.Offset + i] * u[i] / norm;
            const double h = 2e-3;
            double Loss(double step)
            {
                Span<float> v = ps.Value(p);
                float[] keep = v.ToArray();
                for (int i = 0; i < v.Length; i++) v[i] = (float)(keep[i] + step * u[i] / norm);
                ps.Changed();
                double l = model.Step(tokens, targets, weights, gradients: false).Total;
                keep.CopyTo(v);
                ps.Changed();
                return l;
            }
            double numeric = (Loss(h) - Loss(-h)) / (2 * h);
            double scale = Math.Max(Math.Abs(analytic), term == "balance" ? 1e-3 : 1e-2);
            Assert.True(Math.Abs(analytic - numeric) <= 0.03 * scale,
                $"{p.Name}: directional derivative {analytic:E4} (backward) vs {numeric:E4} (finite differences)");
        }
    }

    [Fact]
    public void PerTokenWeights_GiveTheWeightedSumsGradient_AndPerTokenLossesAreReported()
    {
        var (ps, model, tokens, targets) = Setup(V3Odd, batch: 2, seqLen: 7, seed: 8);
        var weights = new LossWeights { Mtp = 0, Balance = 0 };
        int count = targets.Count(t => t >= 0);
        Array.Clear(ps.Grads);
        float[] ce = new float[tokens.Length];
        BatchLoss plain = model.Step(tokens, targets, weights, gradients: true, tokenLoss: ce);
        float[] mean = (float[])ps.Grads.Clone();
        Assert.Equal(plain.MainCe, ce.Sum(x => (double)x) / count, 5);
        Assert.All(ce.Where((_, i) => targets[i] < 0), x => Assert.Equal(0f, x));

        // Weights 1/count reproduce the mean exactly; signed weights follow Σ w_i CE_i by finite differences.
        float[] w = [.. targets.Select(t => t >= 0 ? (float)(1.0 / count) : 0f)];
        Array.Clear(ps.Grads);
        model.Step(tokens, targets, weights, gradients: true, tokenWeights: w);
        Assert.Equal(mean, ps.Grads);

        var rng = new Random(2);
        float[] signed = [.. targets.Select(_ => (float)(rng.NextDouble() * 2 - 1))];
        Array.Clear(ps.Grads);
        double total = model.Step(tokens, targets, weights, gradients: true, tokenWeights: signed).MainCe;
        Assert.Equal(Enumerable.Range(0, ce.Length).Sum(i => targets[i] >= 0 ? signed[i] * (double)ce[i] : 0), total, 4);
        foreach (string name in new[] { "lm_head.weight", "model.layers.0.self_attn.kv_b_proj.weight", "model.layers.1.mlp.gate.weight" })
        {
            Parameter p = ps[name];
            double[] u = [.. Enumerable.Range(0, p.Length).Select(_ => rng.NextDouble() * 2 - 1)];
            double norm = Math.Sqrt(u.Sum(x => x * x)), analytic = 0;
            for (int i = 0; i < p.Length; i++) analytic += ps.Grads[p.Offset + i] * u[i] / norm;
            double Loss(double h)
            {
                Span<float> v = ps.Value(p);
                float[] keep = v.ToArray();
                for (int i = 0; i < v.Length; i++) v[i] = (float)(keep[i] + h * u[i] / norm);
                ps.Changed();
                double l = model.Step(tokens, targets, weights, gradients: false, tokenWeights: signed).MainCe;
                keep.CopyTo(v);
                ps.Changed();
                return l;
            }
            double numeric = (Loss(2e-3) - Loss(-2e-3)) / 4e-3;
            Assert.True(Math.Abs(analytic - numeric) <= 0.03 * Math.Max(Math.Abs(analytic), 1e-2), $"{name}: {analytic:E4} vs {numeric:E4}");
        }
    }

    [Fact]
    public void TwoMicroBatches_AccumulateToTheGradientOfTheWholeBatch()
    {
        var (ps, model, tokens, targets) = Setup(V3Odd, batch: 2, seqLen: 7, seed: 5);
        for (int i = 0; i < targets.Length; i++) if (targets[i] < 0 && (i + 1) % 7 != 0) targets[i] = tokens[i + 1]; // equal target counts
        var weights = new LossWeights();
        Array.Clear(ps.Grads);
        model.Step(tokens, targets, weights, gradients: true);
        float[] whole = (float[])ps.Grads.Clone();
        var half = new TrainingModel(ps, 1, 7);
        Array.Clear(ps.Grads);
        half.Step(tokens.AsSpan(0, 7), targets.AsSpan(0, 7), weights, gradients: true, gradScale: 0.5);
        half.Step(tokens.AsSpan(7, 7), targets.AsSpan(7, 7), weights, gradients: true, gradScale: 0.5);
        double rel = Compare.MaxRelative(ps.Grads, whole);
        Assert.True(rel <= 1e-5, $"accumulated vs whole batch: {rel:E2}");
    }
}

/// <summary>A training step allocates nothing once its buffers exist (counted on the calling thread).</summary>
[Collection(AllocationSensitive.Name)]
public class TrainingAllocationTests
{
    [Fact]
    public void AStep_AllocatesNothingOnceWarm()
    {
        // A pool of its own, so a product never finds it busy with another test's work and runs inline for the first time.
        using var pool = new DeepSeekSharp.Kernels.WorkerPool(2);
        using var scope = DeepSeekSharp.Kernels.WorkerPool.Use(pool);
        var (ps, model, tokens, targets) = ModelGradientTests.Setup(ModelGradientTests.V3Odd, batch: 2, seqLen: 7, seed: 5);
        var weights = new LossWeights();
        model.Step(tokens, targets, weights, gradients: true);
        model.Step(tokens, targets, weights, gradients: true);
        long before = GC.GetAllocatedBytesForCurrentThread();
        model.Step(tokens, targets, weights, gradients: true);
        model.Step(tokens, targets, weights, gradients: false);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
