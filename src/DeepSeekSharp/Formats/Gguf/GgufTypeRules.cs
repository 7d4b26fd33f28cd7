using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using G = DeepSeekSharp.Formats.TensorNames.Gguf;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>The type each tensor of a deepseek2 GGUF gets in a file of type <paramref name="file"/>, as
/// llama-quantize's llama_tensor_get_type chooses it without an importance matrix:
/// <list type="bullet">
/// <item>1-D tensors, norms and the router stay F32; float file types (F32, F16, BF16) write every matrix in their
/// format.</item>
/// <item>The output matrix is Q6_K in every quantised type but Q8_0 (Q8_0 where its rows do not divide into the
/// type's blocks); so is the token embedding of a file without one (tied embeddings).</item>
/// <item>ffn_down: Q2_K → Q3_K; Q3_K_M → Q5_K in the first sixteenth of the layers, Q4_K after; Q3_K_L → Q5_K;
/// Q4_K_M and Q5_K_M → Q6_K in the layers use_more_bits picks (the first and last eighth, and every third between);
/// Q4_K_S → Q5_K in the first eighth.</item>
/// <item>attn_v-like tensors (attn_v, attn_qkv, attn_kv_b, counted in file order): Q2_K → Q4_K where four or more
/// heads share a KV head (<paramref name="gqa"/>), else Q3_K; Q3_K_M → Q5_K for the first two, Q4_K after; Q3_K_L →
/// Q5_K; Q4_K_M and Q5_K_M → Q6_K for those use_more_bits picks by their count; Q4_K_S → Q5_K for the first four.</item>
/// <item>attn_output: Q2_K → Q3_K, Q3_K_M → Q4_K, Q3_K_L → Q5_K.</item>
/// <item>With eight routed experts (its Mixtral rules): attn_v-like and attn_k tensors Q8_0, and attn_output Q5_K
/// in Q2_K, Q3_K_S, Q3_K_M, Q4_K_S and Q4_K_M files (and as the type says otherwise).</item>
/// <item>Rows that do not divide into the type's blocks fall back as llama.cpp's do (Q2_K, Q3_K → Q4_0; Q4_K →
/// Q5_0; Q5_K → Q5_1; Q6_K → Q8_0; Q8_0, Q4_0 and a fallback that does not fit either → F16).</item>
/// </list>
/// Tensors must be asked for in the order they are written, among <paramref name="names"/> (the file's tensors): the
/// attn_v-like ones are counted over the file.</summary>
public sealed class GgufTypeRules(GgufFileType file, int layers, int experts, IEnumerable<string> names, int gqa = 1)
{
    private readonly int _attentionVs = names.Count(IsAttentionV); // llama.cpp's n_attention_wv
    private readonly bool _tied = !names.Contains(G.Output); // no output matrix: the embedding is it (has_tied_embeddings)
    private int _attentionV; // attn_v-like tensors seen so far (its i_attention_wv)

    /// <summary>The type of tensor <paramref name="name"/>, whose rows are <paramref name="rowLength"/> long (ggml's
    /// ne0) and which has <paramref name="nDims"/> dimensions.</summary>
    public GgmlType For(string name, long rowLength, int nDims)
    {
        if (nDims == 1 || name.EndsWith("_norm.weight", StringComparison.Ordinal) || name.EndsWith(G.FfnGateInp, StringComparison.Ordinal))
            return GgmlType.F32;
        GgmlType type = file.Format.ToGgml();
        if (file.Format is WeightFormat.F32 or WeightFormat.F16 or WeightFormat.BF16) return type;
        if (name == G.Output || (_tied && name == G.TokenEmbd))
            type = rowLength % type.Traits().BlockSize != 0 || type == GgmlType.Q8_0 ? GgmlType.Q8_0 : GgmlType.Q6_K;
        else if (IsAttentionV(name)) type = AttentionV(type, _attentionV++);
        else if (name.EndsWith("attn_k.weight", StringComparison.Ordinal))
        {
            if (experts == 8) type = GgmlType.Q8_0;
        }
        else if (name.EndsWith(G.AttnOutput, StringComparison.Ordinal)) type = AttentionOutput(type);
        else if (name.Contains("ffn_down", StringComparison.Ordinal)) type = FfnDown(type, Layer(name));
        return Fitting(type, rowLength);
    }

    /// <summary>The <paramref name="i"/>-th attn_v-like tensor's type.</summary>
    private GgmlType AttentionV(GgmlType type, int i)
    {
        if (experts == 8) return GgmlType.Q8_0;
        if (file == GgufFileType.Q2_K) return gqa >= 4 ? GgmlType.Q4_K : GgmlType.Q3_K;
        if (file == GgufFileType.Q3_K_M) return i < 2 ? GgmlType.Q5_K : GgmlType.Q4_K;
        if (file == GgufFileType.Q3_K_L) return GgmlType.Q5_K;
        if ((file == GgufFileType.Q4_K_M || file == GgufFileType.Q5_K_M) && MoreBits(i, _attentionVs)) return GgmlType.Q6_K;
        if (file == GgufFileType.Q4_K_S && i < 4) return GgmlType.Q5_K;
        return type;
    }

    private GgmlType AttentionOutput(GgmlType type)
    {
        if (experts == 8)
            return file == GgufFileType.Q2_K || file == GgufFileType.Q3_K_S || file == GgufFileType.Q3_K_M || file == GgufFileType.Q4_K_S ||
                file == GgufFileType.Q4_K_M ? GgmlType.Q5_K : type;
        if (file == GgufFileType.Q2_K) return GgmlType.Q3_K;
        if (file == GgufFileType.Q3_K_M) return GgmlType.Q4_K;
        if (file == GgufFileType.Q3_K_L) return GgmlType.Q5_K;
        return type;
    }

    /// <summary>An ffn_down tensor's type in layer <paramref name="layer"/>.</summary>
    private GgmlType FfnDown(GgmlType type, int layer)
    {
        if (file == GgufFileType.Q2_K) return GgmlType.Q3_K;
        if (file == GgufFileType.Q3_K_M) return layer < layers / 16 ? GgmlType.Q5_K : GgmlType.Q4_K;
        if (file == GgufFileType.Q3_K_L) return GgmlType.Q5_K;
        if ((file == GgufFileType.Q4_K_M || file == GgufFileType.Q5_K_M) && MoreBits(layer, layers)) return GgmlType.Q6_K;
        if (file == GgufFileType.Q4_K_S && layer < layers / 8) return GgmlType.Q5_K;
        return type;
    }

    /// <summary>llama.cpp's use_more_bits: the first and last eighth of <paramref name="n"/>, and every third between.</summary>
    private static bool MoreBits(int i, int n) => i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;

    private static bool IsAttentionV(string name) => name.EndsWith(G.AttnKvB, StringComparison.Ordinal) ||
        name.EndsWith("attn_v.weight", StringComparison.Ordinal) || name.EndsWith("attn_qkv.weight", StringComparison.Ordinal);

    /// <summary>The layer of a tensor named blk.N.…</summary>
    private static int Layer(string name) =>
        name.StartsWith("blk.", StringComparison.Ordinal) && int.TryParse(name.AsSpan(4, Math.Max(0, name.IndexOf('.', 4) - 4)), out int layer)
            ? layer : throw new ArgumentException($"tensor '{name}' is not in a layer (blk.N.…)", nameof(name));

    /// <summary><paramref name="type"/> where rows of <paramref name="rowLength"/> divide into its blocks, else
    /// llama.cpp's fallback (<see cref="WeightFormats.LlamaFallback"/>), else F16.</summary>
    private static GgmlType Fitting(GgmlType type, long rowLength)
    {
        if (rowLength % type.Traits().BlockSize == 0) return type;
        GgmlType fallback = type.Traits().Format.LlamaFallback()?.ToGgml() ?? GgmlType.F16;
        return rowLength % fallback.Traits().BlockSize == 0 ? fallback : GgmlType.F16;
    }
}
