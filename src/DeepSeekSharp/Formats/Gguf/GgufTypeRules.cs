using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using G = DeepSeekSharp.Formats.TensorNames.Gguf;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>The type each tensor of a deepseek2 GGUF gets when a file is written as <paramref name="target"/>, as
/// llama-quantize's llama_tensor_get_type chooses it without an importance matrix (the file types of
/// <see cref="WeightFormats.GgufTargets"/>; Q4_K and Q5_K are its Q4_K_S and Q5_K_S):
/// <list type="bullet">
/// <item>1-D tensors, norms and the router stay F32; float targets (F32, F16, BF16) are written as they are named.</item>
/// <item>The output matrix is Q6_K for the quantised targets but Q8_0 (Q8_0 where its rows do not divide into its
/// own type's blocks).</item>
/// <item>Q4_K_S: each layer's ffn_down tensors in the first eighth of the layers are Q5_K; the first four attn_v-like
/// tensors (attn_v, attn_qkv, attn_kv_b, in file order) Q5_K.</item>
/// <item>With eight routed experts (ggml's Mixtral rules): attn_v-like and attn_k tensors Q8_0, and for Q4_K_S
/// attn_output Q5_K.</item>
/// <item>Rows that do not divide into the type's blocks fall back as llama.cpp's do (Q4_K → Q5_0, Q5_K → Q5_1,
/// Q6_K → Q8_0; Q8_0, Q4_0 and a fallback that does not fit either → F16).</item>
/// </list>
/// Tensors must be asked for in the order they are written: the attn_v-like count runs over the file.</summary>
public sealed class GgufTypeRules(WeightFormat target, int layers, int experts)
{
    private int _attentionV; // attn_v-like tensors seen so far (llama.cpp's i_attention_wv)

    /// <summary>The type of tensor <paramref name="name"/>, whose rows are <paramref name="rowLength"/> long (ggml's
    /// ne0) and which has <paramref name="nDims"/> dimensions.</summary>
    public GgmlType For(string name, long rowLength, int nDims)
    {
        if (nDims == 1 || name.EndsWith("_norm.weight", StringComparison.Ordinal) || name.EndsWith(G.FfnGateInp, StringComparison.Ordinal))
            return GgmlType.F32;
        if (target is WeightFormat.F32 or WeightFormat.F16 or WeightFormat.BF16) return target.ToGgml();
        GgmlType type = target.ToGgml();
        if (name == G.Output)
            type = rowLength % type.Traits().BlockSize != 0 ? GgmlType.Q8_0 : type == GgmlType.Q8_0 ? GgmlType.Q8_0 : GgmlType.Q6_K;
        else if (name.EndsWith(G.AttnKvB, StringComparison.Ordinal) || name.EndsWith("attn_v.weight", StringComparison.Ordinal) ||
                 name.EndsWith("attn_qkv.weight", StringComparison.Ordinal))
        {
            if (experts == 8) type = GgmlType.Q8_0;
            else if (target == WeightFormat.Q4_K && _attentionV < 4) type = GgmlType.Q5_K;
            _attentionV++;
        }
        else if (name.EndsWith("attn_k.weight", StringComparison.Ordinal))
        {
            if (experts == 8) type = GgmlType.Q8_0;
        }
        else if (name.EndsWith(G.AttnOutput, StringComparison.Ordinal))
        {
            if (experts == 8 && target == WeightFormat.Q4_K) type = GgmlType.Q5_K;
        }
        else if (name.Contains("ffn_down", StringComparison.Ordinal))
        {
            if (target == WeightFormat.Q4_K && Layer(name) < layers / 8) type = GgmlType.Q5_K;
        }
        return Fitting(type, rowLength);
    }

    /// <summary>The layer of a tensor named blk.N.…</summary>
    private static int Layer(string name) =>
        name.StartsWith("blk.", StringComparison.Ordinal) && int.TryParse(name.AsSpan(4, Math.Max(0, name.IndexOf('.', 4) - 4)), out int layer)
            ? layer : throw new ArgumentException($"tensor '{name}' is not in a layer (blk.N.…)", nameof(name));

    /// <summary><paramref name="type"/> where rows of <paramref name="rowLength"/> divide into its blocks, else
    /// llama.cpp's fallback, else F16.</summary>
    private static GgmlType Fitting(GgmlType type, long rowLength)
    {
        if (rowLength % type.Traits().BlockSize == 0) return type;
        GgmlType fallback = type switch
        {
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q5_K => GgmlType.Q5_1,
            GgmlType.Q6_K => GgmlType.Q8_0,
            _ => GgmlType.F16,
        };
        return rowLength % fallback.Traits().BlockSize == 0 ? fallback : GgmlType.F16;
    }
}
