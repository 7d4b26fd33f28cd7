namespace DeepSeekSharp.Training;

/// <summary>DeepSeek-V3's auxiliary-loss-free load balancing: after a step, each routed expert's
/// <c>e_score_correction_bias</c> moves by γ toward the mean load,
/// <c>b_i ← b_i + γ · sign(mean_load − load_i)</c> (sign(0) = 0), where load_i counts the (token, expert) assignments
/// the biased choice made over the batch. The bias only chooses experts; it never weights them.</summary>
public static class BiasBalancing
{
    /// <param name="bias">[n_routed_experts], updated in place</param>
    /// <param name="load">[n_routed_experts] assignments per expert over the batch</param>
    /// <param name="gamma">the bias update rate (DeepSeek-V3: 0.001)</param>
    public static void Update(Span<float> bias, ReadOnlySpan<int> load, float gamma)
    {
        if (load.Length != bias.Length) throw new ArgumentException($"{load.Length} loads for {bias.Length} experts", nameof(load));
        if (bias.IsEmpty) return;
        long total = 0;
        foreach (int l in load) total += l;
        double mean = (double)total / load.Length;
        for (int i = 0; i < bias.Length; i++) bias[i] += gamma * Math.Sign(mean - load[i]);
    }
}
