namespace DeepSeekSharp.Model;

/// <summary>Optional hook into the forward pass (one null check per call site in the hot path). Tests use it to
/// compare intermediates with reference dumps.</summary>
public interface IActivationObserver
{
    /// <summary>The experts a MoE layer chose for one token, best first, and their final weights.</summary>
    void OnRouting(int layer, int position, ReadOnlySpan<int> experts, ReadOnlySpan<float> weights);
}

/// <summary>How MLA is computed.</summary>
public enum AttentionMode
{
    /// <summary>Expanded for batches of several tokens (prefill), absorbed for single tokens (decode).</summary>
    Auto,
    /// <summary>Decompress per-head k_nope and v for every cached position; ordinary multi-head attention.</summary>
    Expanded,
    /// <summary>Fold kv_b_proj into the query and output; attend over the cached latents directly.</summary>
    Absorbed,
}
