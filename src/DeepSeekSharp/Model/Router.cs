using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Model;

/// <summary>DeepSeekMoE expert choice for one token (HF <c>MoEGate</c>, model.py <c>Gate.forward</c>):
/// 1. scores = softmax (V2) or sigmoid (V3) of the router logits;
/// 2. choice = scores + e_score_correction_bias when present (selection only);
/// 3. group-limited methods keep the topk_group best groups (max score without a bias, sum of the two best
///    biased scores with one) and mask the rest;
/// 4. the num_experts_per_tok best choice scores win;
/// 5. weights = their unbiased scores, normalised to sum 1 when norm_topk_prob, times routed_scaling_factor.</summary>
public static class Router
{
    /// <param name="logits">[E] router logits</param>
    /// <param name="bias">[E] e_score_correction_bias, or empty</param>
    /// <param name="scores">[E] scratch: the unbiased scores on return</param>
    /// <param name="choice">[E] scratch: the (biased, masked) choice scores on return</param>
    /// <param name="experts">[k] chosen experts, best first</param>
    /// <param name="weights">[k] their routing weights</param>
    public static void Route(ModelConfig c, ReadOnlySpan<float> logits, ReadOnlySpan<float> bias,
        Span<float> scores, Span<float> choice, Span<int> experts, Span<float> weights)
    {
        int nExperts = c.NRoutedExperts;
        logits.CopyTo(scores);
        if (c.ScoreFunc == ScoreFunc.Softmax) Softmax.InPlace(scores[..nExperts]);
        else for (int e = 0; e < nExperts; e++) scores[e] = 1f / (1f + MathF.Exp(-scores[e]));

        scores[..nExperts].CopyTo(choice);
        if (!bias.IsEmpty)
            for (int e = 0; e < nExperts; e++) choice[e] += bias[e];

        if (c.TopkMethod != TopkMethod.Greedy && c.NExpertGroups > 1)
            MaskGroups(c, choice[..nExperts], useTopTwoSum: !bias.IsEmpty);

        TopK.Select(choice[..nExperts], experts);
        float sum = 0;
        for (int i = 0; i < experts.Length; i++) sum += weights[i] = scores[experts[i]];
        float factor = (float)c.RouteScale / (c.NormTopkProb ? sum : 1f);
        for (int i = 0; i < experts.Length; i++) weights[i] *= factor;
    }

    /// <summary>Sets the choice score of every expert outside the topk_group best groups to −∞.</summary>
    private static void MaskGroups(ModelConfig c, Span<float> choice, bool useTopTwoSum)
    {
        int nGroups = c.NExpertGroups, perGroup = choice.Length / nGroups;
        Span<float> groupScore = stackalloc float[nGroups];
        Span<int> best = stackalloc int[2];
        for (int g = 0; g < nGroups; g++)
        {
            Span<float> group = choice.Slice(g * perGroup, perGroup);
            if (useTopTwoSum)
            {
                TopK.Select(group, best);
                groupScore[g] = group[best[0]] + group[best[1]];
            }
            else
            {
                float max = float.NegativeInfinity;
                foreach (float s in group) max = MathF.Max(max, s);
                groupScore[g] = max;
            }
        }
        Span<int> keep = stackalloc int[c.NLimitedGroups];
        TopK.Select(groupScore, keep);
        for (int g = 0; g < nGroups; g++)
            if (keep.IndexOf(g) < 0) choice.Slice(g * perGroup, perGroup).Fill(float.NegativeInfinity);
    }
}
