using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Model;

// Weights named after the formula (DeepSeek's model.py names), each matrix in the format it was loaded as (see
// Linear/WeightFormat.cs); norms and biases in float32. Shapes: [out, in], y = W x.

/// <summary>The query projection: plain (V2-Lite, q_lora_rank null) or low-rank (V3/R1).</summary>
public abstract class QProjection
{
    private QProjection() { }

    /// <summary>q = W_q x.</summary>
    /// <param name="Wq">[nHeads·qkHeadDim, dim]; q_proj</param>
    public sealed class Plain(Matrix Wq) : QProjection
    {
        public Matrix Wq { get; } = Wq;
    }

    /// <summary>q = W_qB · q_norm(W_qA x).</summary>
    /// <param name="WqA">[qLoraRank, dim]; q_a_proj</param>
    /// <param name="QNorm">[qLoraRank]; q_a_layernorm</param>
    /// <param name="WqB">[nHeads·qkHeadDim, qLoraRank]; q_b_proj</param>
    public sealed class LowRank(Matrix WqA, float[] QNorm, Matrix WqB) : QProjection
    {
        public Matrix WqA { get; } = WqA;
        public float[] QNorm { get; } = QNorm;
        public Matrix WqB { get; } = WqB;
    }

    /// <summary>The projection's matrices.</summary>
    public IEnumerable<Matrix> Matrices() => this switch
    {
        Plain p => [p.Wq],
        LowRank l => [l.WqA, l.WqB],
        _ => throw new InvalidOperationException(),
    };
}

/// <summary>Multi-head Latent Attention weights of one block.</summary>
public sealed class AttentionWeights
{
    public required QProjection Q { get; init; }
    /// <summary>[kvLoraRank + qkRopeHeadDim, dim]; kv_a_proj_with_mqa (latent first, rotary key last).</summary>
    public required Matrix WkvA { get; init; }
    /// <summary>[kvLoraRank]; kv_a_layernorm.</summary>
    public required float[] KvNorm { get; init; }
    /// <summary>[nHeads·(qkNopeHeadDim + vHeadDim), kvLoraRank]; kv_b_proj, per head [k_nope | v].</summary>
    public required Matrix WkvB { get; init; }
    /// <summary>[dim, nHeads·vHeadDim]; o_proj.</summary>
    public required Matrix Wo { get; init; }
    /// <summary>[nHeads·kvLoraRank, qkNopeHeadDim]: each head's k_nope part of kv_b_proj, transposed, so absorbed
    /// attention folds q_nope into latent space with an ordinary product (GGUF: attn_k_b). Derived at load.</summary>
    public required Matrix WkT { get; init; }
}

/// <summary>The feed-forward half of a block: a dense MLP or DeepSeekMoE.</summary>
public abstract class FeedForwardWeights
{
    private protected FeedForwardWeights() { }

    /// <summary>Every matrix of the feed-forward half.</summary>
    public abstract IEnumerable<Matrix> Matrices();
}

/// <summary>A SwiGLU MLP: down(silu(gate x) ⊙ up x).</summary>
public sealed class MlpWeights : FeedForwardWeights
{
    /// <summary>[inter, dim]; gate_proj.</summary>
    public required Matrix Gate { get; init; }
    /// <summary>[inter, dim]; up_proj.</summary>
    public required Matrix Up { get; init; }
    /// <summary>[dim, inter]; down_proj.</summary>
    public required Matrix Down { get; init; }
    public int InterDim => Gate.Rows;

    public override IEnumerable<Matrix> Matrices() => [Gate, Up, Down];
}

/// <summary>DeepSeekMoE weights of one block.</summary>
public sealed class MoeWeights : FeedForwardWeights
{
    /// <summary>[nRoutedExperts, dim]; mlp.gate.weight.</summary>
    public required Matrix Router { get; init; }
    /// <summary>[nRoutedExperts]; mlp.gate.e_score_correction_bias (noaux_tc only).</summary>
    public float[]? RouterBias { get; init; }
    /// <summary>nRoutedExperts experts of width moe_intermediate_size.</summary>
    public required MlpWeights[] Experts { get; init; }
    /// <summary>The shared experts fused into one MLP of width n_shared_experts · moe_intermediate_size.</summary>
    public MlpWeights? Shared { get; init; }

    public override IEnumerable<Matrix> Matrices() =>
        [Router, .. Experts.Concat(Shared is null ? [] : [Shared]).SelectMany(e => e.Matrices())];
}

/// <summary>One decoder block: attention and a dense MLP or an MoE.</summary>
public sealed class BlockWeights
{
    /// <summary>[dim]; input_layernorm.</summary>
    public required float[] AttnNorm { get; init; }
    public required AttentionWeights Attn { get; init; }
    /// <summary>[dim]; post_attention_layernorm.</summary>
    public required float[] FfnNorm { get; init; }
    /// <summary>A dense MLP (layers before first_k_dense_replace) or an MoE.</summary>
    public required FeedForwardWeights Ffn { get; init; }

    /// <summary>Every matrix of the block.</summary>
    public IEnumerable<Matrix> Matrices() => [.. Attn.Q.Matrices(), Attn.WkvA, Attn.WkvB, Attn.WkT, Attn.Wo, .. Ffn.Matrices()];
}

/// <summary>A multi-token-prediction module (weights at model.layers.{num_hidden_layers + k}).</summary>
public sealed class MtpWeights
{
    /// <summary>[dim]; enorm, applied to the next token's embedding.</summary>
    public required float[] ENorm { get; init; }
    /// <summary>[dim]; hnorm, applied to the main model's hidden state.</summary>
    public required float[] HNorm { get; init; }
    /// <summary>[dim, 2·dim]; eh_proj over concat(enorm(embed), hnorm(h)).</summary>
    public required Matrix EhProj { get; init; }
    /// <summary>[vocab, dim]; the module's embed_tokens (a copy of the main one in released checkpoints).</summary>
    public required Matrix Embed { get; init; }
    public required BlockWeights Block { get; init; }
    /// <summary>[dim]; shared_head.norm.</summary>
    public required float[] HeadNorm { get; init; }
    /// <summary>[vocab, dim]; shared_head.head.</summary>
    public required Matrix Head { get; init; }
}

/// <summary>All weights of a model.</summary>
public sealed class ModelWeights
{
    /// <summary>[vocab, dim]; model.embed_tokens.</summary>
    public required Matrix Embed { get; init; }
    public required BlockWeights[] Blocks { get; init; }
    /// <summary>[dim]; model.norm.</summary>
    public required float[] Norm { get; init; }
    /// <summary>[vocab, dim]; lm_head (the embedding when tie_word_embeddings).</summary>
    public required Matrix Head { get; init; }
    public required MtpWeights[] Mtp { get; init; }
    /// <summary>Storage dtypes found in the checkpoint, with tensor counts.</summary>
    public required IReadOnlyDictionary<string, int> DTypes { get; init; }

    /// <summary>Every weight matrix (a tied head appears once).</summary>
    public IEnumerable<Matrix> AllMatrices()
    {
        var all = new List<Matrix> { Embed };
        foreach (BlockWeights b in Blocks) all.AddRange(b.Matrices());
        if (!ReferenceEquals(Head, Embed)) all.Add(Head);
        foreach (MtpWeights m in Mtp)
        {
            all.Add(m.EhProj);
            if (!ReferenceEquals(m.Embed, Embed)) all.Add(m.Embed);
            all.AddRange(m.Block.Matrices());
            if (!ReferenceEquals(m.Head, Head)) all.Add(m.Head);
        }
        return all;
    }
}
