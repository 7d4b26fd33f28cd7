namespace DeepSeekSharp.Kernels.Quant;

/// <summary>ggml tensor types as numbered in GGUF files (ggml.h's enum ggml_type).</summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
}

/// <summary>Block geometry of the ggml types we read and write, and one scalar dequantiser/quantiser entry point
/// per type: the specification every fast kernel is tested against. Rows are whole blocks.</summary>
public static class GgmlBlocks
{
    /// <summary>The types this engine reads (and writes), in the order listed in error messages.</summary>
    public static readonly GgmlType[] Supported =
    [
        GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.IQ4_NL, GgmlType.IQ4_XS,
    ];

    public static bool IsSupported(GgmlType t) => Array.IndexOf(Supported, t) >= 0;

    /// <summary>Values per block.</summary>
    public static int BlockSize(GgmlType t) => t switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => 1,
        GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 or GgmlType.Q8_0 or GgmlType.IQ4_NL => 32,
        GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.IQ4_XS => 256,
        _ => throw Unsupported(t),
    };

    /// <summary>Bytes per block.</summary>
    public static int TypeSize(GgmlType t) => t switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        GgmlType.Q4_0 => 18, GgmlType.Q4_1 => 20, GgmlType.Q5_0 => 22, GgmlType.Q5_1 => 24, GgmlType.Q8_0 => BlockQ8_0.Bytes,
        GgmlType.Q2_K => 84, GgmlType.Q3_K => 110, GgmlType.Q4_K => BlockQ4K.Bytes, GgmlType.Q5_K => 176, GgmlType.Q6_K => BlockQ6K.Bytes,
        GgmlType.IQ4_NL => 18, GgmlType.IQ4_XS => 136,
        _ => throw Unsupported(t),
    };

    /// <summary>Bytes of a row of <paramref name="n"/> values (n a multiple of the block size).</summary>
    public static long RowBytes(GgmlType t, long n)
    {
        int bs = BlockSize(t);
        if (n % bs != 0) throw new ArgumentException($"{t} stores rows in blocks of {bs}; {n} values do not divide");
        return n / bs * TypeSize(t);
    }

    public static NotSupportedException Unsupported(GgmlType t, string? tensor = null) => new(
        $"{(tensor is null ? "" : $"tensor '{tensor}': ")}ggml type {Name(t)} is not supported; supported: {string.Join(", ", Supported.Select(Name))}");

    public static string Name(GgmlType t) => Enum.IsDefined(t) ? t.ToString() : $"#{(uint)t}";

    /// <summary>Dequantises whole blocks of <paramref name="src"/> into <paramref name="dst"/>.</summary>
    public static void Dequantize(GgmlType t, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (src.Length != RowBytes(t, dst.Length)) ThrowHelper.LengthMismatch(nameof(src), RowBytes(t, dst.Length), src.Length);
        switch (t)
        {
            case GgmlType.F32: System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(src).CopyTo(dst); break;
            case GgmlType.F16: System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(src), dst); break;
            case GgmlType.BF16:
                ReadOnlySpan<ushort> b = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(src);
                for (int i = 0; i < b.Length; i++) dst[i] = Tensors.NumberFormats.BF16ToFloat(b[i]);
                break;
            case GgmlType.Q8_0: Q8_0.DequantizeRow(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, BlockQ8_0>(src), dst); break;
            case GgmlType.Q4_K: Q4K.DequantizeRow(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, BlockQ4K>(src), dst); break;
            case GgmlType.Q6_K: Q6K.DequantizeRow(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, BlockQ6K>(src), dst); break;
            case GgmlType.Q4_0: LegacyQuants.DequantizeQ4_0(src, dst); break;
            case GgmlType.Q4_1: LegacyQuants.DequantizeQ4_1(src, dst); break;
            case GgmlType.Q5_0: LegacyQuants.DequantizeQ5_0(src, dst); break;
            case GgmlType.Q5_1: LegacyQuants.DequantizeQ5_1(src, dst); break;
            case GgmlType.Q2_K: KQuants.DequantizeQ2K(src, dst); break;
            case GgmlType.Q3_K: KQuants.DequantizeQ3K(src, dst); break;
            case GgmlType.Q5_K: KQuants.DequantizeQ5K(src, dst); break;
            case GgmlType.IQ4_NL: Iq4.DequantizeNl(src, dst); break;
            case GgmlType.IQ4_XS: Iq4.DequantizeXs(src, dst); break;
            default: throw Unsupported(t);
        }
    }

    /// <summary>Quantises <paramref name="src"/> (whole blocks) into <paramref name="dst"/>.</summary>
    public static void Quantize(GgmlType t, ReadOnlySpan<float> src, Span<byte> dst)
    {
        if (dst.Length != RowBytes(t, src.Length)) ThrowHelper.LengthMismatch(nameof(dst), RowBytes(t, src.Length), dst.Length);
        switch (t)
        {
            case GgmlType.F32: src.CopyTo(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(dst)); break;
            case GgmlType.F16: System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(src, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(dst)); break;
            case GgmlType.BF16:
                Span<ushort> b = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(dst);
                for (int i = 0; i < b.Length; i++) b[i] = Tensors.NumberFormats.FloatToBF16(src[i]);
                break;
            case GgmlType.Q8_0: Q8_0.QuantizeRow(src, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, BlockQ8_0>(dst)); break;
            case GgmlType.Q4_K: Q4K.QuantizeRow(src, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, BlockQ4K>(dst)); break;
            case GgmlType.Q6_K: Q6K.QuantizeRow(src, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, BlockQ6K>(dst)); break;
            case GgmlType.Q4_0: LegacyQuants.QuantizeQ4_0(src, dst); break;
            case GgmlType.Q4_1: LegacyQuants.QuantizeQ4_1(src, dst); break;
            case GgmlType.Q5_0: LegacyQuants.QuantizeQ5_0(src, dst); break;
            case GgmlType.Q5_1: LegacyQuants.QuantizeQ5_1(src, dst); break;
            case GgmlType.Q2_K: KQuants.QuantizeQ2K(src, dst); break;
            case GgmlType.Q3_K: KQuants.QuantizeQ3K(src, dst); break;
            case GgmlType.Q5_K: KQuants.QuantizeQ5K(src, dst); break;
            case GgmlType.IQ4_NL: Iq4.QuantizeNl(src, dst); break;
            case GgmlType.IQ4_XS: Iq4.QuantizeXs(src, dst); break;
            default: throw Unsupported(t);
        }
    }
}
