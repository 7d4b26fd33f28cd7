using DeepSeekSharp.Linear;
namespace DeepSeekSharp.Kernels.Quant;

/// <summary>ggml tensor types as numbered in GGUF files (ggml.h's enum ggml_type).</summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
}

/// <summary>The ggml types this engine reads, for GGUF files and their error messages. A type's geometry, dequantiser
/// and quantiser are in its format's traits (<see cref="Linear.WeightFormats.Traits(GgmlType, string?)"/>).</summary>
public static class GgmlBlocks
{
    /// <summary>The types this engine reads (and writes), in the order listed in error messages.</summary>
    public static readonly GgmlType[] Supported =
        [.. Linear.WeightFormats.All.Where(f => f.Ggml is not null).Select(f => f.Ggml!.Value).Order()];

    public static bool IsSupported(GgmlType t) => Array.IndexOf(Supported, t) >= 0;

    public static NotSupportedException Unsupported(GgmlType t, string? tensor = null) => new(
        $"{(tensor is null ? "" : $"tensor '{tensor}': ")}ggml type {Name(t)} is not supported; supported: {string.Join(", ", Supported.Select(Name))}");

    public static string Name(GgmlType t) => Enum.IsDefined(t) ? t.ToString() : $"#{(uint)t}";
}
