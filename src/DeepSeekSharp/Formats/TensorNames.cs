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
        /// <summary>Not in Hugging Face checkpoints: each head's W_UK (the k_nope rows of kv_b_proj) transposed, as GGUF
        /// files store it (<c>attn_k_b</c>, dims [nope, rank, heads]). The loader derives it from kv_b_proj where a
        /// checkpoint lacks it.</summary>
        public const string WkT = "self_attn.k_b_proj_transposed.weight";

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

    /// <summary>llama.cpp's GGUF names for the <c>deepseek2</c> architecture (llama-arch.cpp, gguf-py constants.py).
    /// 2-D weights have ggml dims [in, out]; routed experts are stacked as [in, out, n_expert].</summary>
    public static class Gguf
    {
        public const string Arch = "deepseek2";
        public const string TokenEmbd = "token_embd.weight";
        public const string OutputNorm = "output_norm.weight";
        public const string Output = "output.weight";
        public static string Block(int layer, string name) => $"blk.{layer}.{name}";

        public const string AttnNorm = "attn_norm.weight";
        public const string AttnQ = "attn_q.weight";
        public const string AttnQA = "attn_q_a.weight";
        public const string AttnQANorm = "attn_q_a_norm.weight";
        public const string AttnQB = "attn_q_b.weight";
        public const string AttnKvAMqa = "attn_kv_a_mqa.weight";
        public const string AttnKvANorm = "attn_kv_a_norm.weight";
        /// <summary>Older files: kv_b_proj as is, dims [kv_lora_rank, n_head·(nope + v)].</summary>
        public const string AttnKvB = "attn_kv_b.weight";
        /// <summary>Newer files: each head's k_nope rows of kv_b_proj transposed, dims [nope, kv_lora_rank, n_head].</summary>
        public const string AttnKB = "attn_k_b.weight";
        /// <summary>Newer files: each head's v rows of kv_b_proj, dims [kv_lora_rank, v_head_dim, n_head].</summary>
        public const string AttnVB = "attn_v_b.weight";
        public const string AttnOutput = "attn_output.weight";
        public const string FfnNorm = "ffn_norm.weight";
        public const string FfnGate = "ffn_gate.weight";
        public const string FfnUp = "ffn_up.weight";
        public const string FfnDown = "ffn_down.weight";
        public const string FfnGateInp = "ffn_gate_inp.weight";
        public const string ExpProbsB = "exp_probs_b.bias";
        public const string FfnGateExps = "ffn_gate_exps.weight";
        public const string FfnUpExps = "ffn_up_exps.weight";
        public const string FfnDownExps = "ffn_down_exps.weight";
        public const string FfnGateShexp = "ffn_gate_shexp.weight";
        public const string FfnUpShexp = "ffn_up_shexp.weight";
        public const string FfnDownShexp = "ffn_down_shexp.weight";

        /// <summary>Where a Hugging Face tensor lives in a deepseek2 GGUF: the GGUF name and, for a routed expert, its
        /// index in the stacked tensor (−1 otherwise). kv_b_proj maps to <see cref="AttnKvB"/>; files that split it
        /// into <see cref="AttnKB"/> and <see cref="AttnVB"/> are handled by the reader. Null when there is none.</summary>
        public static (string Name, int Expert)? FromHf(string hf)
        {
            switch (hf)
            {
                case Hf.Embed: return (TokenEmbd, -1);
                case Hf.Norm: return (OutputNorm, -1);
                case Hf.Head: return (Output, -1);
            }
            const string layers = "model.layers.";
            if (!hf.StartsWith(layers, StringComparison.Ordinal)) return null;
            int dot = hf.IndexOf('.', layers.Length);
            if (dot < 0 || !int.TryParse(hf.AsSpan(layers.Length, dot - layers.Length), out int l)) return null;
            string suffix = hf[(dot + 1)..];
            int expert = -1;
            const string experts = "mlp.experts.";
            if (suffix.StartsWith(experts, StringComparison.Ordinal))
            {
                int d2 = suffix.IndexOf('.', experts.Length);
                if (d2 < 0 || !int.TryParse(suffix.AsSpan(experts.Length, d2 - experts.Length), out expert)) return null;
                suffix = "experts." + suffix[(d2 + 1)..];
            }
            string? name = suffix switch
            {
                Hf.AttnNorm => AttnNorm, Hf.FfnNorm => FfnNorm, Hf.Wq => AttnQ, Hf.WqA => AttnQA, Hf.QNorm => AttnQANorm,
                Hf.WqB => AttnQB, Hf.WkvA => AttnKvAMqa, Hf.KvNorm => AttnKvANorm, Hf.WkvB => AttnKvB, Hf.WkT => AttnKB, Hf.Wo => AttnOutput,
                Hf.DenseMlp + Hf.Gate => FfnGate, Hf.DenseMlp + Hf.Up => FfnUp, Hf.DenseMlp + Hf.Down => FfnDown,
                Hf.SharedExperts + Hf.Gate => FfnGateShexp, Hf.SharedExperts + Hf.Up => FfnUpShexp, Hf.SharedExperts + Hf.Down => FfnDownShexp,
                "experts." + Hf.Gate => FfnGateExps, "experts." + Hf.Up => FfnUpExps, "experts." + Hf.Down => FfnDownExps,
                Hf.Router => FfnGateInp, Hf.RouterBias => ExpProbsB,
                _ => null,
            };
            return name is null ? null : (Block(l, name), expert);
        }
    }

    /// <summary>GGUF metadata keys (gguf-py constants.py Keys); <c>{0}</c> is the architecture.</summary>
    public static class GgufKeys
    {
        public const string Architecture = "general.architecture";
        public const string Type = "general.type";
        public const string Name = "general.name";
        public const string FileType = "general.file_type";
        public const string QuantizationVersion = "general.quantization_version";

        public static string Arch(string key) => $"{Gguf.Arch}.{key}";
        public const string BlockCount = "block_count";
        public const string ContextLength = "context_length";
        public const string EmbeddingLength = "embedding_length";
        public const string FeedForwardLength = "feed_forward_length";
        public const string HeadCount = "attention.head_count";
        public const string HeadCountKv = "attention.head_count_kv";
        public const string RmsEps = "attention.layer_norm_rms_epsilon";
        public const string QLoraRank = "attention.q_lora_rank";
        public const string KvLoraRank = "attention.kv_lora_rank";
        public const string KeyLength = "attention.key_length";
        public const string ValueLength = "attention.value_length";
        public const string KeyLengthMla = "attention.key_length_mla";
        public const string ValueLengthMla = "attention.value_length_mla";
        public const string LeadingDenseBlockCount = "leading_dense_block_count";
        public const string VocabSize = "vocab_size";
        public const string ExpertCount = "expert_count";
        public const string ExpertUsedCount = "expert_used_count";
        public const string ExpertSharedCount = "expert_shared_count";
        public const string ExpertFeedForwardLength = "expert_feed_forward_length";
        public const string ExpertWeightsScale = "expert_weights_scale";
        public const string ExpertWeightsNorm = "expert_weights_norm";
        public const string ExpertGatingFunc = "expert_gating_func";
        public const string ExpertGroupCount = "expert_group_count";
        public const string ExpertGroupUsedCount = "expert_group_used_count";
        public const string RopeDimensionCount = "rope.dimension_count";
        public const string RopeFreqBase = "rope.freq_base";
        public const string RopeScalingType = "rope.scaling.type";
        public const string RopeScalingFactor = "rope.scaling.factor";
        public const string RopeScalingOrigCtx = "rope.scaling.original_context_length";
        public const string RopeYarnLogMul = "rope.scaling.yarn_log_multiplier";
        public const string RopeYarnBetaFast = "rope.scaling.yarn_beta_fast";
        public const string RopeYarnBetaSlow = "rope.scaling.yarn_beta_slow";

        public const string TokenizerModel = "tokenizer.ggml.model";
        public const string TokenizerPre = "tokenizer.ggml.pre";
        public const string Tokens = "tokenizer.ggml.tokens";
        public const string TokenTypes = "tokenizer.ggml.token_type";
        public const string Merges = "tokenizer.ggml.merges";
        public const string BosId = "tokenizer.ggml.bos_token_id";
        public const string EosId = "tokenizer.ggml.eos_token_id";
        public const string PadId = "tokenizer.ggml.padding_token_id";
        public const string AddBos = "tokenizer.ggml.add_bos_token";
        public const string AddEos = "tokenizer.ggml.add_eos_token";
        public const string ChatTemplate = "tokenizer.chat_template";
    }
}
