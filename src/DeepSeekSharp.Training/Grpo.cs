namespace DeepSeekSharp.Training;

/// <summary>How the GRPO objective averages over tokens.</summary>
public enum GrpoNormalization
{
    /// <summary>DeepSeekMath: (1/G) Σ_i (1/|o_i|) Σ_t: each completion weighs the same, whatever its length.</summary>
    Sequence,
    /// <summary>DAPO: (1/Σ|o_i|) Σ_i Σ_t: each token weighs the same, so long completions are not diluted.</summary>
    Token,
}

/// <summary>GRPO's hyper-parameters: ε of the clipped ratio (DAPO raises the upper bound: <see cref="EpsilonHigh"/>),
/// β of the k3 KL estimate against the reference policy (0 drops the term), the advantage denominator's ε.</summary>
public sealed record GrpoOptions
{
    public double Epsilon { get; init; } = 0.2;
    /// <summary>Upper clip bound 1 + EpsilonHigh (null: <see cref="Epsilon"/>; DAPO: 0.28).</summary>
    public double? EpsilonHigh { get; init; }
    public double Beta { get; init; } = 0.04;
    public double AdvantageEps { get; init; } = 1e-4;
    public GrpoNormalization Normalization { get; init; } = GrpoNormalization.Sequence;
}

/// <summary>Group Relative Policy Optimization (DeepSeekMath; R1's RL stage) with outcome rewards, for one group of G
/// completions of one prompt, over per-token log-probabilities:
/// <code>
/// A_i    = (r_i − mean r) / (std r + ε_A)                        std with Bessel's correction (G − 1)
/// ρ_it   = exp(cur_it − old_it)
/// S_it   = min(ρ_it A_i, clip(ρ_it, 1 − ε, 1 + ε_high) A_i)
/// k3_it  = exp(ref_it − cur_it) − (ref_it − cur_it) − 1
/// loss   = −(1/G) Σ_i (1/|o_i|) Σ_t (S_it − β k3_it)           (token normalisation: −(1/Σ|o_i|) Σ_i Σ_t)
/// ∂loss/∂cur_it = −w_i (g_it − β (1 − exp(ref_it − cur_it))),    g_it = ρ_it A_i where the unclipped term is the
///                                                                  minimum, else 0; w_i the normalisation weight
/// </code>
/// old and ref are constants. Completions are concatenated: completion i holds tokens [start_i, start_i + length_i).</summary>
public static class Grpo
{
    /// <summary>The group-relative advantages of <paramref name="rewards"/>.</summary>
    public static void Advantages(ReadOnlySpan<double> rewards, Span<double> advantages, double eps = 1e-4)
    {
        int g = rewards.Length;
        if (advantages.Length != g) throw new ArgumentException($"{advantages.Length} advantages for {g} rewards", nameof(advantages));
        if (g < 2) throw new ArgumentException("a group needs at least 2 completions", nameof(rewards));
        double mean = 0;
        foreach (double r in rewards) mean += r;
        mean /= g;
        double ss = 0;
        foreach (double r in rewards) ss += (r - mean) * (r - mean);
        double std = Math.Sqrt(ss / (g - 1));
        for (int i = 0; i < g; i++) advantages[i] = (rewards[i] - mean) / (std + eps);
    }

    /// <summary>The loss of one group and (into <paramref name="gradCur"/>, overwritten) its gradient with respect to
    /// every current log-probability.</summary>
    /// <param name="lengths">[G] tokens of each completion (each ≥ 1)</param>
    /// <param name="cur">[Σ lengths] log-probabilities of the sampled tokens under the policy being trained</param>
    /// <param name="old">[Σ lengths] under the policy that sampled them</param>
    /// <param name="reference">[Σ lengths] under the frozen reference policy (unused when β = 0)</param>
    /// <param name="advantages">[G] from <see cref="Advantages"/></param>
    public static double Loss(GrpoOptions o, ReadOnlySpan<int> lengths, ReadOnlySpan<double> cur, ReadOnlySpan<double> old,
        ReadOnlySpan<double> reference, ReadOnlySpan<double> advantages, Span<double> gradCur)
    {
        int g = lengths.Length, total = 0;
        if (advantages.Length != g) throw new ArgumentException($"{advantages.Length} advantages for {g} completions", nameof(advantages));
        foreach (int l in lengths)
        {
            if (l < 1) throw new ArgumentException("every completion needs at least one token", nameof(lengths));
            total += l;
        }
        if (cur.Length != total || old.Length != total || gradCur.Length != total || (o.Beta != 0 && reference.Length != total))
            throw new ArgumentException($"per-token arrays must hold Σ lengths = {total} values");
        double lo = 1 - o.Epsilon, hi = 1 + (o.EpsilonHigh ?? o.Epsilon), loss = 0;
        int at = 0;
        for (int i = 0; i < g; i++)
        {
            double w = o.Normalization == GrpoNormalization.Sequence ? 1.0 / ((double)g * lengths[i]) : 1.0 / total;
            double a = advantages[i];
            for (int t = at; t < at + lengths[i]; t++)
            {
                double rho = Math.Exp(cur[t] - old[t]);
                double unclipped = rho * a, clipped = Math.Clamp(rho, lo, hi) * a;
                double surrogate = Math.Min(unclipped, clipped);
                double grad = unclipped <= clipped ? unclipped : 0; // ∂S/∂cur: ρA through the unclipped term, 0 through a clipped one
                double kl = 0, dkl = 0;
                if (o.Beta != 0)
                {
                    double e = Math.Exp(reference[t] - cur[t]);
                    kl = e - (reference[t] - cur[t]) - 1;
                    dkl = 1 - e;                                   // ∂k3/∂cur
                }
                loss -= w * (surrogate - o.Beta * kl);
                gradCur[t] = -w * (grad - o.Beta * dkl);
            }
            at += lengths[i];
        }
        return loss;
    }
}
