using DeepSeekSharp.Model;

namespace DeepSeekSharp.Tests.Model;

/// <summary>Every golden case against DeepSeek's reference logits, through both attention paths.</summary>
public class GoldenForwardTests
{
    // Golden README: a float32 engine must stay within 1e-4 of the reference (max |ours − ref| / max |ref|).
    private const double Tolerance = 1e-4;

    public static TheoryData<string, AttentionMode> CasesAndModes()
    {
        var data = new TheoryData<string, AttentionMode>();
        foreach (string c in GoldenCase.All)
            foreach (AttentionMode m in Enum.GetValues<AttentionMode>())
                data.Add(c, m);
        return data;
    }

    public static TheoryData<string> Cases() => new(GoldenCase.All);

    private static DeepSeekModel Model(string name) => ModelCache.Get(GoldenCase.Load(name).Directory);

    [Theory]
    [MemberData(nameof(CasesAndModes))]
    public void PrefillThenDecode_MatchesReferenceAtEveryPositionAndStep(string name, AttentionMode mode)
    {
        GoldenCase g = GoldenCase.Load(name);
        using InferenceSession s = Model(name).CreateSession();
        s.Attention = mode;
        int vocab = s.Config.VocabSize;
        float[] logits = s.Forward(g.PromptIds);
        for (int p = 0; p < g.PromptIds.Length; p++)
            Compare.Close(logits.AsSpan(p * vocab, vocab), g.PerPositionLogits[p], Tolerance, $"{name} {mode} prefill position {p}");
        Compare.Close(logits.AsSpan((g.PromptIds.Length - 1) * vocab, vocab), g.PrefillLastLogits, Tolerance, $"{name} {mode} prefill_last_logits");
        foreach (var (id, position, expected) in g.Decode)
        {
            Assert.Equal(position, s.Position);
            Compare.Close(s.Forward([id]), expected, Tolerance, $"{name} {mode} decode position {position}");
        }
    }

    [Theory]
    [MemberData(nameof(CasesAndModes))]
    public void TokenByTokenFromEmptyCache_MatchesPerPositionLogits(string name, AttentionMode mode)
    {
        GoldenCase g = GoldenCase.Load(name);
        using InferenceSession s = Model(name).CreateSession();
        s.Attention = mode;
        for (int p = 0; p < g.PromptIds.Length; p++)
            Compare.Close(s.Forward([g.PromptIds[p]]), g.PerPositionLogits[p], Tolerance, $"{name} {mode} position {p}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ExpandedAndAbsorbed_AgreeWithinOneInAHundredThousand(string name)
    {
        GoldenCase g = GoldenCase.Load(name);
        int[] all = [.. g.PromptIds, .. g.Decode.Select(d => d.InputId)];
        float[] Run(AttentionMode mode, bool stepwise)
        {
            using InferenceSession s = Model(name).CreateSession();
            s.Attention = mode;
            if (!stepwise) return s.Forward(all);
            return all.SelectMany(t => s.Forward([t])).ToArray();
        }
        foreach (bool stepwise in new[] { false, true })
        {
            float[] expanded = Run(AttentionMode.Expanded, stepwise), absorbed = Run(AttentionMode.Absorbed, stepwise);
            // Same math, different association order: float32 rounding only (issue: ≤ 1e-5 relative).
            int vocab = Model(name).Config.VocabSize;
            for (int p = 0; p < all.Length; p++)
                Compare.Close(absorbed.AsSpan(p * vocab, vocab), expanded.AsSpan(p * vocab, vocab), 1e-5, $"{name} position {p} stepwise={stepwise}");
        }
    }

    private sealed class RoutingRecorder(int layer) : IActivationObserver
    {
        public readonly List<(int Position, int[] Experts, float[] Weights)> Seen = [];

        public void OnRouting(int l, int position, ReadOnlySpan<int> experts, ReadOnlySpan<float> weights)
        {
            if (l == layer) Seen.Add((position, experts.ToArray(), weights.ToArray()));
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void FirstMoeLayerRouting_ChoosesTheReferenceExpertsWithTheReferenceWeights(string name)
    {
        GoldenCase g = GoldenCase.Load(name);
        DeepSeekModel model = Model(name);
        var recorder = new RoutingRecorder(model.Config.NDenseLayers);
        using InferenceSession s = model.CreateSession();
        s.Observer = recorder;
        s.Forward(g.PromptIds);
        Assert.Equal(g.Routing.Length, recorder.Seen.Count);
        foreach (var (position, tokenId, experts, weights) in g.Routing)
        {
            var (_, ours, ourWeights) = recorder.Seen.Single(r => r.Position == position);
            Assert.Equal(g.PromptIds[position], tokenId);
            Assert.Equal(experts.Order(), ours.Order()); // exact choice, compared as sets
            var expectedByExpert = experts.Zip(weights).ToDictionary(p => p.First, p => p.Second);
            float[] expectedInOurOrder = ours.Select(e => expectedByExpert[e]).ToArray();
            Compare.Close(ourWeights, expectedInOurOrder, Tolerance, $"{name} routing weights at position {position}");
        }
    }

    [Fact]
    public void Mtp_V3Tiny_MatchesReferenceDraftLogits()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        DeepSeekModel model = Model("v3-tiny");
        Assert.Equal(1, model.MtpLayers);
        Assert.Equal(g.PromptIds.Length - 1, g.Mtp.Length);
        int n = g.PromptIds.Length, d = model.Config.Dim, vocab = model.Config.VocabSize;
        foreach (AttentionMode mode in Enum.GetValues<AttentionMode>())
        {
            using InferenceSession s = model.CreateSession();
            s.Attention = mode;
            s.Forward(g.PromptIds);
            float[] hidden = s.LastHidden.ToArray();
            var mtp = new float[(n - 1) * vocab];
            s.ForwardMtp(g.PromptIds.AsSpan(1), hidden.AsSpan(0, (n - 1) * d), mtp);
            foreach (var (position, inputId, expected) in g.Mtp)
            {
                Assert.Equal(g.PromptIds[position + 1], inputId);
                Compare.Close(mtp.AsSpan(position * vocab, vocab), expected, Tolerance, $"MTP {mode} position {position}");
            }
        }
    }

    [Fact]
    public void Mtp_StepByStep_MatchesBatchedDraftLogits()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        DeepSeekModel model = Model("v3-tiny");
        int d = model.Config.Dim, vocab = model.Config.VocabSize;
        using InferenceSession s = model.CreateSession();
        var mtp = new float[vocab];
        s.Forward([g.PromptIds[0]]);
        for (int i = 0; i + 1 < g.PromptIds.Length; i++)
        {
            float[] hidden = s.LastHidden.ToArray();
            s.ForwardMtp([g.PromptIds[i + 1]], hidden, mtp);
            Compare.Close(mtp, g.Mtp[i].Logits, Tolerance, $"MTP decode position {i}");
            s.Forward([g.PromptIds[i + 1]]);
        }
    }
}

/// <summary>Loads each golden model once per test run (as stored, or quantised at load).</summary>
internal static class ModelCache
{
    private static readonly Dictionary<(string, DeepSeekSharp.Linear.WeightFormat?), DeepSeekModel> Models = new();

    public static DeepSeekModel Get(string dir, DeepSeekSharp.Linear.WeightFormat? quantize = null)
    {
        lock (Models)
        {
            if (!Models.TryGetValue((dir, quantize), out DeepSeekModel? m))
                Models[(dir, quantize)] = m = DeepSeekModel.Load(dir, new LoadOptions { Quantize = quantize });
            return m;
        }
    }
}
