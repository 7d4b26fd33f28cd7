namespace DeepSeekSharp.Formats;

/// <summary>The one place that knows external tensor names. Hugging Face names are those of the released
/// DeepSeek-V2/V3/R1 checkpoints (<c>model.layers.N.self_attn.kv_a_proj_with_mqa.weight</c>, ...).</summary>
public static class TensorNames
{
    public static class Hf
    {
        public const string Embed = "model.embed_tokens.weight";
        public const string Norm = "model.norm.weight";
        public const string Head = "lm_head.weight";

        public static string Layer(int layer, string suffix) => $"model.layers.{layer}.{suffix}";

        public const string AttnNorm = "input_layernorm.weight";
        public const string FfnNorm = "post_attention_layernorm.weight";
        public const string Wq = "self_attn.q_proj.weight";
        public const string WqA = "self_attn.q_a_proj.weight";
        public const string QNorm = "self_attn.q_a_layernorm.weight";
        public const string WqB = "self_attn.q_b_proj.weight";
        public const string WkvA = "self_attn.kv_a_proj_with_mqa.weight";
        public const string KvNorm = "self_attn.kv_a_layernorm.weight";
        public const string WkvB = "self_attn.kv_b_proj.weight";
        public const string Wo = "self_attn.o_proj.weight";

        /// <summary>Dense MLP (<c>mlp.</c>), routed expert (<c>mlp.experts.E.</c>) or shared experts
        /// (<c>mlp.shared_experts.</c>) prefix; append <see cref="Gate"/>, <see cref="Up"/>, <see cref="Down"/>.</summary>
        public const string DenseMlp = "mlp.";
        public static string Expert(int e) => $"mlp.experts.{e}.";
        public const string SharedExperts = "mlp.shared_experts.";
        public const string Gate = "gate_proj.weight";
        public const string Up = "up_proj.weight";
        public const string Down = "down_proj.weight";
        public const string Router = "mlp.gate.weight";
        public const string RouterBias = "mlp.gate.e_score_correction_bias";

        // Multi-token prediction module, at layer index num_hidden_layers + k.
        public const string MtpENorm = "enorm.weight";
        public const string MtpHNorm = "hnorm.weight";
        public const string MtpEhProj = "eh_proj.weight";
        public const string MtpEmbed = "embed_tokens.weight";
        public const string MtpHeadNorm = "shared_head.norm.weight";
        public const string MtpHead = "shared_head.head.weight";

        /// <summary>FP8 checkpoints: the block scale tensor that belongs to a weight.</summary>
        public static string ScaleInv(string weightName) => weightName + "_scale_inv";
    }
}
