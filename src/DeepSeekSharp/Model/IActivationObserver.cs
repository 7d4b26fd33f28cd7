namespace DeepSeekSharp.Model;

/// <summary>Optional hook into the forward pass (one null check per call site in the hot path). Tests and
/// <c>dss logits --dump</c> use it to compare intermediates with a reference layer by layer.</summary>
public interface IActivationObserver
{
    /// <summary>The experts a MoE layer chose for one token, best first, and their final weights.</summary>
    void OnRouting(int layer, int position, ReadOnlySpan<int> experts, ReadOnlySpan<float> weights) { }

    /// <summary>A named intermediate (<see cref="TensorName"/>) of block <paramref name="layer"/> (−1 for tensors after
    /// the blocks): <paramref name="rows"/> tokens of the batch × <paramref name="cols"/> values, row-major. The span
    /// is only valid during the call.</summary>
    void OnTensor(string name, int layer, ReadOnlySpan<float> values, int rows, int cols) { }
}

/// <summary>Names of the intermediates passed to <see cref="IActivationObserver.OnTensor"/>, as llama.cpp names them
/// in <c>deepseek2.cpp</c> where it has a name. Shapes per token; H heads, D qk_nope_head_dim, R qk_rope_head_dim,
/// V v_head_dim, C kv_lora_rank, E routed experts.</summary>
public static class TensorName
{
    /// <summary>[dim] input_layernorm(x).</summary>
    public const string AttnNorm = "attn_norm";
    /// <summary>[H·(D + R)] the queries per head [q_nope | q_pe], before RoPE.</summary>
    public const string Q = "q";
    /// <summary>[C + R] kv_a_proj_with_mqa(x): the latent c_kv before its norm, and k_pe before RoPE.</summary>
    public const string KvCmpr = "kv_cmpr";
    /// <summary>[H·V] attention output per head, before o_proj.</summary>
    public const string KqvOut = "kqv_out";
    /// <summary>[dim] o_proj of the attention output.</summary>
    public const string AttnOut = "attn_out";
    /// <summary>[dim] the residual stream after attention.</summary>
    public const string FfnInp = "ffn_inp";
    /// <summary>[dim] post_attention_layernorm of <see cref="FfnInp"/>.</summary>
    public const string FfnNorm = "ffn_norm";
    /// <summary>[E] router logits (MoE layers).</summary>
    public const string FfnMoeLogits = "ffn_moe_logits";
    /// <summary>[dim] the MLP's or MoE's output (routed and shared experts together).</summary>
    public const string FfnOut = "ffn_out";
    /// <summary>[dim] the block's output: the residual stream after the feed-forward half.</summary>
    public const string LOut = "l_out";
    /// <summary>[dim] the final norm of the last block's output (layer −1): the hidden state MTP and the head read.</summary>
    public const string ResultNorm = "result_norm";
    /// <summary>[vocab] the logits (layer −1).</summary>
    public const string ResultOutput = "result_output";
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
