using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Inference;

[Collection(AllocationSensitive.Name)]
public class SamplerTests
{
    // ln of probabilities 0.5, 0.3, 0.15, 0.05: softmax gives them back exactly.
    private static readonly float[] Logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f)];

    private static int[] Histogram(SamplingOptions o, float[] logits, int draws = 20000)
    {
        var chain = new SamplerChain(o with { Seed = 7 }, logits.Length);
        var counts = new int[logits.Length];
        for (int i = 0; i < draws; i++) counts[chain.Sample(logits)]++;
        return counts;
    }

    [Fact]
    public void Rng_SeededSequence_IsPinnedAcrossMachines()
    {
        // Values computed independently (Python) for SplitMix64-seeded xorshift64* with seed 42.
        var rng = new Rng(42);
        Assert.Equal(0x31b0ece7c4f697a2UL, rng.NextUInt64());
        Assert.Equal(0x9008a3b1cb686f03UL, rng.NextUInt64());
        Assert.Equal(0x7c7173abd97be16fUL, rng.NextUInt64());
    }

    [Fact]
    public void SameSeed_GivesTheSameTokens_DifferentSeedDiffers()
    {
        float[] logits = Enumerable.Range(0, 1000).Select(i => MathF.Sin(i) * 3).ToArray();
        int[] Run(ulong seed)
        {
            var chain = new SamplerChain(new SamplingOptions { Seed = seed, TopP = 0.9f }, logits.Length);
            return Enumerable.Range(0, 50).Select(_ => chain.Sample(logits)).ToArray();
        }
        Assert.Equal(Run(5), Run(5));
        Assert.NotEqual(Run(5), Run(6));
    }

    [Fact]
    public void Greedy_PicksTheLargestLogit_LowestIdOnTies()
    {
        var chain = new SamplerChain(new SamplingOptions { Temperature = 0 }, 4);
        Assert.Equal(0, chain.Sample(Logits));
        Assert.Equal(1, chain.Sample([1f, 3f, 3f, 2f]));
    }

    [Fact]
    public void Temperature1_DrawsInProportionToSoftmax()
    {
        int[] h = Histogram(new SamplingOptions(), Logits);
        double[] expected = [0.5, 0.3, 0.15, 0.05];
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], h[i] / 20000.0, 0.015); // ±1.5 points over 20k draws (> 4 σ)
    }

    [Fact]
    public void Temperature_SharpensTheDistribution()
    {
        // T = 0.5 squares the probabilities: 0.25, 0.09, 0.0225, 0.0025 → normalised 0.6897, 0.2483, 0.0621, 0.0069
        int[] h = Histogram(new SamplingOptions { Temperature = 0.5f }, Logits);
        Assert.Equal(0.6897, h[0] / 20000.0, 0.015);
        Assert.Equal(0.2483, h[1] / 20000.0, 0.015);
    }

    [Fact]
    public void TopK2_OnlyEverDrawsTheTwoBest_InTheirRenormalisedProportion()
    {
        int[] h = Histogram(new SamplingOptions { TopK = 2 }, Logits);
        Assert.Equal(0, h[2] + h[3]);
        Assert.Equal(0.625, h[0] / 20000.0, 0.015); // 0.5 / 0.8
    }

    [Fact]
    public void TopP_KeepsTheSmallestSetReachingP()
    {
        int[] h = Histogram(new SamplingOptions { TopP = 0.79f }, Logits); // 0.5 + 0.3 reaches 0.79
        Assert.Equal(0, h[2] + h[3]);
        Assert.True(h[1] > 0);
        int[] h2 = Histogram(new SamplingOptions { TopP = 0.81f }, Logits); // needs the third
        Assert.True(h2[2] > 0);
        Assert.Equal(0, h2[3]);
    }

    [Fact]
    public void MinP_DropsTokensBelowAFractionOfTheBest()
    {
        int[] h = Histogram(new SamplingOptions { MinP = 0.29f }, Logits); // threshold 0.145: keeps 0.5, 0.3, 0.15
        Assert.Equal(0, h[3]);
        Assert.True(h[2] > 0);
    }

    [Fact]
    public void LogitBias_CanForceAToken()
    {
        var chain = new SamplerChain(new SamplingOptions { Temperature = 0, LogitBias = new Dictionary<int, float> { [3] = 100 } }, 4);
        Assert.Equal(3, chain.Sample(Logits));
    }

    [Fact]
    public void RepetitionPenalty_DividesPositiveAndMultipliesNegativeLogitsOfSeenTokens()
    {
        var chain = new SamplerChain(new SamplingOptions { Temperature = 0, RepetitionPenalty = 2f }, 3);
        chain.Accept(0);
        chain.Accept(2);
        // 3 → 1.5 (seen, positive), 2 stays, -1 → -2 (seen, negative): token 1 wins
        Assert.Equal(1, chain.Sample([3f, 2f, -1f]));
        Assert.Equal(1.5f, chain.Candidates.Items[0].Logit);
        Assert.Equal(-2f, chain.Candidates.Items[2].Logit);
    }

    [Fact]
    public void PresenceAndFrequencyPenalties_SubtractPerOccurrence()
    {
        var chain = new SamplerChain(new SamplingOptions { Temperature = 0, PresencePenalty = 0.5f, FrequencyPenalty = 0.25f }, 2);
        chain.Accept(0);
        chain.Accept(0);
        chain.Accept(0);
        chain.Sample([2f, 0f]);
        Assert.Equal(2f - 0.5f - 3 * 0.25f, chain.Candidates.Items[0].Logit);
        Assert.Equal(0f, chain.Candidates.Items[1].Logit);
    }

    [Fact]
    public void PenaltyWindow_ForgetsTokensThatLeftIt()
    {
        var chain = new SamplerChain(new SamplingOptions { Temperature = 0, PresencePenalty = 1f, PenaltyWindow = 2 }, 3);
        chain.Accept(0);
        chain.Accept(1);
        chain.Accept(2); // token 0 leaves the window
        chain.Sample([0f, 0f, 0f]);
        Assert.Equal([0f, -1f, -1f], chain.Candidates.Items.ToArray().Select(c => c.Logit));
    }

    [Theory]
    [InlineData("temperature", 2.5f)]
    [InlineData("top_p", 0f)]
    [InlineData("min_p", 1.5f)]
    [InlineData("presence_penalty", 3f)]
    [InlineData("frequency_penalty", -2.5f)]
    public void Validate_OutOfRange_NamesTheOptionAndRange(string option, float value)
    {
        SamplingOptions o = option switch
        {
            "temperature" => new() { Temperature = value },
            "top_p" => new() { TopP = value },
            "min_p" => new() { MinP = value },
            "presence_penalty" => new() { PresencePenalty = value },
            _ => new() { FrequencyPenalty = value },
        };
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new SamplerChain(o, 10));
        Assert.Equal(option, e.ParamName);
        Assert.Contains($"'{option}' must be in", e.Message);
    }

    [Fact]
    public void Validate_LogitBiasOutsideVocabulary_Throws()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new SamplerChain(new SamplingOptions { LogitBias = new Dictionary<int, float> { [10] = 1 } }, 10));
        Assert.Contains("token 10, outside [0, 10)", e.Message);
    }

    [Fact]
    public void Sample_AfterWarmUp_AllocatesNothing()
    {
        float[] logits = Enumerable.Range(0, 5000).Select(i => MathF.Cos(i)).ToArray();
        var chain = new SamplerChain(new SamplingOptions { Seed = 1, TopK = 40, TopP = 0.9f, MinP = 0.05f, RepetitionPenalty = 1.1f }, logits.Length);
        chain.Sample(logits);
        chain.Accept(3);
        long before = GC.GetAllocatedBytesForCurrentThread();
        chain.Sample(logits);
        chain.Accept(4);
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
    }

    /// <summary>The selection behind a deep top-p cut keeps exactly what a full sort would: the smallest prefix of the
    /// candidates ordered by logit (then id) whose probabilities reach p — on a 129,280-token random distribution (as
    /// random weights give) with ties, for several p.</summary>
    [Theory]
    [InlineData(0.3)]
    [InlineData(0.95)]
    [InlineData(0.9999)]
    public void KeepTopMass_KeepsTheSmallestSortedPrefixReachingTheMass(double mass)
    {
        const int v = 129280;
        var rng = new DeepSeekSharp.Tensors.Rng(5);
        float[] logits = Enumerable.Range(0, v).Select(_ => (float)Math.Round(rng.NextDouble() * 4, 3)).ToArray(); // many equal logits
        var c = new Candidates(v);
        c.Load(logits);
        c.Softmax();
        Candidate[] sorted = c.Items.ToArray().OrderByDescending(x => x.Logit).ThenBy(x => x.Id).ToArray();
        double cumulative = 0;
        int k = 0;
        while (k < v && (cumulative += sorted[k].P) < mass) k++;
        k = Math.Min(k + 1, v);
        c.KeepTopMass(mass);
        Assert.Equal(sorted.Take(k).Select(x => x.Id).Order(), c.Items.ToArray().Select(x => x.Id).Order());
    }

    [Fact]
    public void TopP_OnAFlatDistribution_KeepsExactlyTheSmallestTopSetWithoutSorting()
    {
        // 20,000 nearly equal tokens: the cut is far past the sorted-prefix fast path, so the threshold bisection runs.
        const int v = 20000;
        float[] logits = Enumerable.Range(0, v).Select(i => i * 1e-4f).ToArray();
        var chain = new SamplerChain(new SamplingOptions { TopP = 0.5f, Seed = 3 }, v);
        chain.Sample(logits);
        int[] kept = chain.Candidates.Items.ToArray().Select(c => c.Id).Order().ToArray();
        double[] p = logits.Select(l => Math.Exp(l - logits.Max())).ToArray();
        double total = p.Sum(), cumulative = 0;
        int k = 0;
        foreach (int id in Enumerable.Range(0, v).OrderByDescending(i => logits[i]))
        {
            cumulative += p[id] / total;
            k++;
            if (cumulative >= 0.5) break;
        }
        Assert.InRange(kept.Length, k - 1, k + 1); // float32 mass vs float64 here: at most the boundary token differs
        Assert.Equal(Enumerable.Range(v - kept.Length, kept.Length), kept); // and they are the most likely ones
    }
}
