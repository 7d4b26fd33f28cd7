using System.Text.Json;
using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

/// <summary>The GRPO loss and gradient against the golden float64 torch autograd values (clipped ratios of both signs,
/// equal rewards, on-policy), plus the normalisation and clipping options the golden data does not cover.</summary>
public class GrpoGoldenTests
{
    private static JsonElement Golden()
    {
        using JsonDocument d = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "train", "grpo.json")));
        return d.RootElement.Clone();
    }

    private static double[] Doubles(JsonElement e) => [.. e.EnumerateArray().Select(x => x.GetDouble())];

    public static TheoryData<string> Variants => new() { "clipped", "equal_rewards", "on_policy" };

    [Theory]
    [MemberData(nameof(Variants))]
    public void LossAndGradient_MatchTorch(string name)
    {
        JsonElement root = Golden(), hyper = root.GetProperty("hyper");
        JsonElement v = root.GetProperty("variants").EnumerateArray().Single(x => x.GetProperty("name").GetString() == name);
        var o = new GrpoOptions { Epsilon = hyper.GetProperty("epsilon").GetDouble(), Beta = hyper.GetProperty("beta").GetDouble(), AdvantageEps = hyper.GetProperty("advantage_eps").GetDouble() };
        double[] rewards = Doubles(v.GetProperty("rewards")), adv = new double[rewards.Length];
        Grpo.Advantages(rewards, adv, o.AdvantageEps);
        double[] wantAdv = Doubles(v.GetProperty("advantages"));
        for (int i = 0; i < adv.Length; i++) Assert.True(Math.Abs(adv[i] - wantAdv[i]) <= 1e-6 * Math.Max(1, Math.Abs(wantAdv[i])), $"A[{i}] {adv[i]} vs {wantAdv[i]}");

        var completions = v.GetProperty("completions").EnumerateArray().ToArray();
        int[] lengths = [.. completions.Select(c => c.GetProperty("cur").GetArrayLength())];
        double[] cur = [.. completions.SelectMany(c => Doubles(c.GetProperty("cur")))];
        double[] old = [.. completions.SelectMany(c => Doubles(c.GetProperty("old")))];
        double[] reference = [.. completions.SelectMany(c => Doubles(c.GetProperty("ref")))];
        double[] grad = new double[cur.Length];
        double loss = Grpo.Loss(o, lengths, cur, old, reference, adv, grad);
        double wantLoss = v.GetProperty("loss").GetDouble();
        Assert.True(Math.Abs(loss - wantLoss) <= 1e-6, $"loss {loss} vs {wantLoss}");
        double[] wantGrad = [.. v.GetProperty("grad_cur").EnumerateArray().SelectMany(Doubles)];
        double max = wantGrad.Max(Math.Abs), err = wantGrad.Select((g, i) => Math.Abs(g - grad[i])).Max();
        Assert.True(err <= 1e-5 * max, $"gradient: max |ours − ref| = {err:E2}, max |ref| = {max:E2}");
    }

    [Fact]
    public void TokenNormalisation_AndAsymmetricClipping_FollowTheirDefinitions()
    {
        // Two completions of lengths 1 and 3, A = ±1, ratios chosen so that only the raised upper bound matters.
        int[] lengths = [1, 3];
        double[] adv = [1, -1], old = [0, 0, 0, 0], cur = [Math.Log(1.25), 0, 0, 0], reference = [0, 0, 0, 0];
        var g = new double[4];
        // ε = 0.2: ρ = 1.25 > 1.2 with A > 0 is clipped (no gradient); ε_high = 0.28 lets it through.
        Grpo.Loss(new GrpoOptions { Beta = 0 }, lengths, cur, old, reference, adv, g);
        Assert.Equal(0, g[0]);
        double loss = Grpo.Loss(new GrpoOptions { Beta = 0, EpsilonHigh = 0.28, Normalization = GrpoNormalization.Token }, lengths, cur, old, reference, adv, g);
        Assert.Equal(-1.25 / 4, g[0], 12);     // −ρA / Σ|o|
        Assert.Equal(1.0 / 4, g[1], 12);       // −(1 · −1) / 4
        Assert.Equal(-(1.25 - 3) / 4, loss, 12);
    }

    [Fact]
    public void BadGroups_AreRejected()
    {
        Assert.Throws<ArgumentException>(() => Grpo.Advantages([1.0], new double[1]));
        Assert.Throws<ArgumentException>(() => Grpo.Loss(new GrpoOptions(), [0, 2], new double[2], new double[2], new double[2], new double[2], new double[2]));
        Assert.Throws<ArgumentException>(() => Grpo.Loss(new GrpoOptions(), [1, 2], new double[2], new double[2], new double[2], new double[2], new double[2]));
    }
}
