using DeepSeekSharp.Linear;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>A GGUF file type as llama-quantize names it (<c>general.file_type</c>, llama.cpp's enum llama_ftype): the
/// format of most tensors and, for the k-quants, the mix — S keeps nearly all of them in it, M and L give the
/// sensitive ones (ffn_down, attn_output, the attn_v-like tensors) more bits. <see cref="GgufTypeRules"/> spells the
/// mixes out.</summary>
public sealed record GgufFileType(string Name, WeightFormat Format, uint Id)
{
    public static readonly GgufFileType F32 = new("f32", WeightFormat.F32, 0), F16 = new("f16", WeightFormat.F16, 1),
        BF16 = new("bf16", WeightFormat.BF16, 32), Q8_0 = new("q8_0", WeightFormat.Q8_0, 7), Q4_0 = new("q4_0", WeightFormat.Q4_0, 2),
        Q2_K = new("q2_k", WeightFormat.Q2_K, 10), Q3_K_S = new("q3_k_s", WeightFormat.Q3_K, 11), Q3_K_M = new("q3_k_m", WeightFormat.Q3_K, 12),
        Q3_K_L = new("q3_k_l", WeightFormat.Q3_K, 13), Q4_K_S = new("q4_k_s", WeightFormat.Q4_K, 14), Q4_K_M = new("q4_k_m", WeightFormat.Q4_K, 15),
        Q5_K_S = new("q5_k_s", WeightFormat.Q5_K, 16), Q5_K_M = new("q5_k_m", WeightFormat.Q5_K, 17), Q6_K = new("q6_k", WeightFormat.Q6_K, 18);

    /// <summary>Every file type <c>dss convert</c> writes (each format's S mix before its others).</summary>
    public static readonly GgufFileType[] All = [F32, F16, BF16, Q8_0, Q4_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K];

    /// <summary>Other names <see cref="Parse"/> accepts, as llama-quantize's: q3_k, q4_k and q5_k for the M mixes.</summary>
    private static readonly (string Name, GgufFileType Type)[] Aliases = [("q3_k", Q3_K_M), ("q4_k", Q4_K_M), ("q5_k", Q5_K_M)];

    /// <summary>The names <see cref="Parse"/> accepts: each type's, then the aliases.</summary>
    public static string[] Names => [.. All.Select(t => t.Name), .. Aliases.Select(a => a.Name)];

    /// <summary>The file type written for tensors of <paramref name="format"/> (Q3_K, Q4_K and Q5_K as their S mixes,
    /// which keep the most tensors in it).</summary>
    public static GgufFileType For(WeightFormat format) =>
        All.FirstOrDefault(t => t.Format == format)
        ?? throw new ArgumentOutOfRangeException(nameof(format), format, $"GGUF file types: {string.Join(", ", Names)}");

    /// <summary>Parses a command-line name (case-insensitive).</summary>
    public static GgufFileType Parse(string name)
    {
        foreach ((string n, GgufFileType t) in All.Select(t => (t.Name, t)).Concat(Aliases))
            if (string.Equals(n, name, StringComparison.OrdinalIgnoreCase)) return t;
        throw new ArgumentException($"unknown GGUF file type '{name}'; expected one of: {string.Join(", ", Names)}", nameof(name));
    }

    public override string ToString() => Name;
}
