using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Linear;

/// <summary>How a weight matrix is stored. Everything else about a format is in its <see cref="FormatTraits"/>.</summary>
public enum WeightFormat { F32, BF16, Q8_0, Q4_K, F16, FP8, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS }

/// <summary>What a format's product kernels take as activations.</summary>
public enum ActivationKind
{
    /// <summary>float32 as they are (the float formats).</summary>
    Float,
    /// <summary>8-bit codes with one scale per 32 values (ggml's Q8_0).</summary>
    Q8PerBlock32,
    /// <summary>8-bit codes with one scale per 256 values and per-32 sums (ggml's Q8_K).</summary>
    Q8PerBlock256,
}

/// <summary>Dequantises whole blocks of one row: <paramref name="src"/> holds RowBytes(dst.Length) bytes.</summary>
public delegate void RowDequantizer(ReadOnlySpan<byte> src, Span<float> dst);

/// <summary>Quantises one row of whole blocks into <paramref name="dst"/> (RowBytes(src.Length) bytes).</summary>
public delegate void RowQuantizer(ReadOnlySpan<float> src, Span<byte> dst);

/// <summary>Makes the matrix type of a format over memory holding rows in the format's file layout.</summary>
public unsafe delegate Matrix MatrixFactory(int rows, int cols, byte* data, IDisposable? owner);

/// <summary>One weight format, as ggml's <c>type_traits</c> describe one: its name, block geometry, the scalar
/// dequantiser and quantiser that specify it (every fast kernel is tested against them), the activations its
/// kernels take, and the matrix type that holds it (which selects the product kernels). Adding a format means one
/// row in <see cref="WeightFormats"/> plus its kernels and matrix type.</summary>
/// <param name="Name">lower-case name on the command line (<c>q8_0</c>)</param>
/// <param name="Ggml">the GGUF tensor type; null for formats GGUF has no type for (FP8 with 128×128 block scales)</param>
/// <param name="SafeTensors">the safetensors dtype name where a checkpoint can store the format element-wise</param>
/// <param name="BlockSize">values per block (1 for element formats)</param>
/// <param name="BlockBytes">bytes per block</param>
/// <param name="Dequantizer">the scalar specification of a row's values; null where a row needs more than its bytes (FP8's block scales)</param>
/// <param name="Quantizer">the scalar quantiser; null for formats made only from checkpoint codes (FP8)</param>
/// <param name="Wrap">the matrix type over rows in the file layout; null where a matrix needs more (FP8: <see cref="Matrix.CreateFp8"/>)</param>
public sealed record FormatTraits(
    WeightFormat Format, string Name, GgmlType? Ggml, string? SafeTensors, int BlockSize, int BlockBytes, ActivationKind Activations,
    RowDequantizer? Dequantizer, RowQuantizer? Quantizer, MatrixFactory? Wrap)
{
    /// <summary>Dequantises one row (whole blocks) of <paramref name="src"/> into <paramref name="dst"/>.</summary>
    public void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (src.Length != RowBytes(dst.Length)) Kernels.ThrowHelper.LengthMismatch(nameof(src), RowBytes(dst.Length), src.Length);
        (Dequantizer ?? throw new NotSupportedException($"{Format} rows need more than their bytes to dequantise"))(src, dst);
    }

    /// <summary>Quantises one row (whole blocks) of <paramref name="src"/> into <paramref name="dst"/>.</summary>
    public void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        if (dst.Length != RowBytes(src.Length)) Kernels.ThrowHelper.LengthMismatch(nameof(dst), RowBytes(src.Length), dst.Length);
        (Quantizer ?? throw new NotSupportedException($"{Format} is made only from checkpoint codes; convert to another format instead"))(src, dst);
    }

    /// <summary>Whether a row of <paramref name="cols"/> values can be converted into this format.</summary>
    public bool CanHold(int cols) => Quantizer is not null && cols % BlockSize == 0;

    /// <summary>Bytes of a row of <paramref name="cols"/> values.</summary>
    public long RowBytes(long cols) =>
        cols % BlockSize == 0 ? cols / BlockSize * BlockBytes
        : throw new ArgumentException($"{Format} stores rows in blocks of {BlockSize}; {cols} values do not divide");
}

/// <summary>The table of weight formats: one <see cref="FormatTraits"/> per <see cref="WeightFormat"/>.</summary>
public static unsafe class WeightFormats
{
    private static readonly FormatTraits[] Table = Build();
    private static readonly FormatTraits?[] ByGgml = IndexByGgml(); // indexed by the GGUF type number

    private static FormatTraits?[] IndexByGgml()
    {
        var index = new FormatTraits?[(int)Enum.GetValues<GgmlType>().Max() + 1];
        foreach (FormatTraits f in Table)
            if (f.Ggml is { } g) index[(int)g] = f;
        return index;
    }

    private static FormatTraits[] Build()
    {
        FormatTraits[] all =
        [
            new(WeightFormat.F32, "f32", GgmlType.F32, "F32", 1, 4, ActivationKind.Float,
                (s, d) => MemoryMarshal.Cast<byte, float>(s).CopyTo(d), (s, d) => s.CopyTo(MemoryMarshal.Cast<byte, float>(d)),
                (r, c, p, o) => new F32Matrix(r, c, p, o)),
            new(WeightFormat.BF16, "bf16", GgmlType.BF16, "BF16", 1, 2, ActivationKind.Float, DequantizeBf16, QuantizeBf16,
                (r, c, p, o) => new Bf16Matrix(r, c, p, o)),
            new(WeightFormat.F16, "f16", GgmlType.F16, "F16", 1, 2, ActivationKind.Float,
                (s, d) => TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(s), d),
                (s, d) => TensorPrimitives.ConvertToHalf(s, MemoryMarshal.Cast<byte, Half>(d)),
                (r, c, p, o) => new F16Matrix(r, c, p, o)),
            new(WeightFormat.FP8, "fp8", null, "F8_E4M3", 1, 1, ActivationKind.Float, null, null, null),
            new(WeightFormat.Q8_0, "q8_0", GgmlType.Q8_0, null, 32, BlockQ8_0.Bytes, ActivationKind.Q8PerBlock32,
                (s, d) => Q8_0.DequantizeRow(MemoryMarshal.Cast<byte, BlockQ8_0>(s), d),
                (s, d) => Q8_0.QuantizeRow(s, MemoryMarshal.Cast<byte, BlockQ8_0>(d)),
                (r, c, p, o) => new BlockQ8Matrix<Q8_0Codes>(WeightFormat.Q8_0, r, c, p, o)),
            new(WeightFormat.Q4_0, "q4_0", GgmlType.Q4_0, null, 32, 18, ActivationKind.Q8PerBlock32,
                LegacyQuants.DequantizeQ4_0, LegacyQuants.QuantizeQ4_0,
                (r, c, p, o) => new BlockQ8Matrix<Q4_0Codes>(WeightFormat.Q4_0, r, c, p, o)),
            new(WeightFormat.Q5_0, "q5_0", GgmlType.Q5_0, null, 32, 22, ActivationKind.Q8PerBlock32,
                LegacyQuants.DequantizeQ5_0, LegacyQuants.QuantizeQ5_0,
                (r, c, p, o) => new BlockQ8Matrix<Q5_0Codes>(WeightFormat.Q5_0, r, c, p, o)),
            new(WeightFormat.Q4_K, "q4_k", GgmlType.Q4_K, null, 256, BlockQ4K.Bytes, ActivationKind.Q8PerBlock256,
                (s, d) => Q4K.DequantizeRow(MemoryMarshal.Cast<byte, BlockQ4K>(s), d),
                (s, d) => Q4K.QuantizeRow(s, MemoryMarshal.Cast<byte, BlockQ4K>(d)),
                (r, c, p, o) => new Q4KMatrix(r, c, p, o)),
            new(WeightFormat.Q6_K, "q6_k", GgmlType.Q6_K, null, 256, BlockQ6K.Bytes, ActivationKind.Q8PerBlock256,
                (s, d) => Q6K.DequantizeRow(MemoryMarshal.Cast<byte, BlockQ6K>(s), d),
                (s, d) => Q6K.QuantizeRow(s, MemoryMarshal.Cast<byte, BlockQ6K>(d)),
                (r, c, p, o) => new Q6KMatrix(r, c, p, o)),
            new(WeightFormat.Q5_K, "q5_k", GgmlType.Q5_K, null, 256, BlockQ5K.Bytes, ActivationKind.Q8PerBlock256,
                KQuants.DequantizeQ5K, KQuants.QuantizeQ5K, (r, c, p, o) => new Q5KMatrix(r, c, p, o)),
            new(WeightFormat.Q4_1, "q4_1", GgmlType.Q4_1, null, 32, 20, ActivationKind.Q8PerBlock32,
                LegacyQuants.DequantizeQ4_1, LegacyQuants.QuantizeQ4_1, (r, c, p, o) => new MinBlockMatrix<Q4_1Codes>(WeightFormat.Q4_1, r, c, p, o)),
            new(WeightFormat.Q5_1, "q5_1", GgmlType.Q5_1, null, 32, 24, ActivationKind.Q8PerBlock32,
                LegacyQuants.DequantizeQ5_1, LegacyQuants.QuantizeQ5_1, (r, c, p, o) => new MinBlockMatrix<Q5_1Codes>(WeightFormat.Q5_1, r, c, p, o)),
            new(WeightFormat.IQ4_NL, "iq4_nl", GgmlType.IQ4_NL, null, 32, 18, ActivationKind.Q8PerBlock32, Iq4.DequantizeNl, Iq4.QuantizeNl,
                (r, c, p, o) => new BlockQ8Matrix<Iq4NlCodes>(WeightFormat.IQ4_NL, r, c, p, o)),
            new(WeightFormat.Q2_K, "q2_k", GgmlType.Q2_K, null, 256, LowBitKQuants.Q2KBytes, ActivationKind.Q8PerBlock256,
                KQuants.DequantizeQ2K, KQuants.QuantizeQ2K, (r, c, p, o) => new LowBitKMatrix(WeightFormat.Q2_K, r, c, p, o)),
            new(WeightFormat.Q3_K, "q3_k", GgmlType.Q3_K, null, 256, LowBitKQuants.Q3KBytes, ActivationKind.Q8PerBlock256,
                KQuants.DequantizeQ3K, KQuants.QuantizeQ3K, (r, c, p, o) => new LowBitKMatrix(WeightFormat.Q3_K, r, c, p, o)),
            new(WeightFormat.IQ4_XS, "iq4_xs", GgmlType.IQ4_XS, null, 256, Iq4Xs.BlockBytes, ActivationKind.Q8PerBlock256,
                Iq4.DequantizeXs, Iq4.QuantizeXs, (r, c, p, o) => new Iq4XsMatrix(r, c, p, o)),
        ];
        var table = new FormatTraits[Enum.GetValues<WeightFormat>().Length];
        foreach (FormatTraits t in all) table[(int)t.Format] = t;
        return table;
    }

    private static void DequantizeBf16(ReadOnlySpan<byte> src, Span<float> dst) =>
        NumberFormats.BF16ToFloat(MemoryMarshal.Cast<byte, ushort>(src), dst);

    private static void QuantizeBf16(ReadOnlySpan<float> src, Span<byte> dst)
    {
        Span<ushort> b = MemoryMarshal.Cast<byte, ushort>(dst);
        NumberFormats.FloatToBF16(src[..b.Length], b);
    }

    /// <summary>Every format, in enum order.</summary>
    public static IReadOnlyList<FormatTraits> All => Table;

    public static FormatTraits Traits(this WeightFormat f) =>
        (uint)f < (uint)Table.Length ? Table[(int)f] : throw new ArgumentOutOfRangeException(nameof(f), f, "not a weight format");

    /// <summary>The format a GGUF tensor type is kept in; throws naming the type (and tensor) when it is not one we read.</summary>
    public static FormatTraits Traits(this GgmlType t, string? tensor = null) =>
        (uint)t < (uint)ByGgml.Length && ByGgml[(int)t] is { } f ? f : throw GgmlBlocks.Unsupported(t, tensor);

    /// <summary>The GGUF type of a format.</summary>
    public static GgmlType ToGgml(this WeightFormat f) =>
        f.Traits().Ggml ?? throw new ArgumentOutOfRangeException(nameof(f), f, $"{f} has no GGUF type");

    /// <summary>Bytes per element of a format stored element by element (F32, F16, BF16, FP8).</summary>
    public static int ElementBytes(this WeightFormat f) =>
        f.Traits() is { BlockSize: 1 } t ? t.BlockBytes : throw new ArgumentOutOfRangeException(nameof(f), f, $"{f} is stored in blocks of {f.Traits().BlockSize}");

    /// <summary>The format a safetensors dtype name stores (F32, F16, BF16, F8_E4M3); null for names we do not read.</summary>
    public static WeightFormat? FromSafeTensorsName(string name)
    {
        foreach (FormatTraits f in Table)
            if (f.SafeTensors == name) return f.Format;
        return null;
    }

    /// <summary>The safetensors dtype name of an element format.</summary>
    public static string SafeTensorsName(this WeightFormat f) =>
        f.Traits().SafeTensors ?? throw new ArgumentOutOfRangeException(nameof(f), f, $"{f} has no safetensors dtype");

    /// <summary>The safetensors dtypes we read, for error messages.</summary>
    public static string SupportedSafeTensorsNames => string.Join(", ", Table.Where(f => f.SafeTensors is not null).Select(f => f.SafeTensors));

    /// <summary>The format llama.cpp puts a tensor in when its rows do not fill <paramref name="f"/>'s 256-blocks
    /// (llama-quant.cpp's tensor_type_fallback: Q2_K and Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0); null for
    /// the others.</summary>
    public static WeightFormat? LlamaFallback(this WeightFormat f) => f switch
    {
        WeightFormat.Q2_K or WeightFormat.Q3_K => WeightFormat.Q4_0,
        WeightFormat.Q4_K => WeightFormat.Q5_0,
        WeightFormat.Q5_K => WeightFormat.Q5_1,
        WeightFormat.Q6_K => WeightFormat.Q8_0,
        _ => null,
    };

    /// <summary>Formats weights can be converted into at load (<c>--quantize</c>): those with a quantiser and a fused
    /// kernel or a float layout.</summary>
    public static readonly WeightFormat[] LoadTargets = [WeightFormat.Q8_0, WeightFormat.Q4_0, WeightFormat.Q4_K, WeightFormat.Q5_K, WeightFormat.Q6_K, WeightFormat.BF16, WeightFormat.F32];

    /// <summary>The command-line names of <paramref name="formats"/>.</summary>
    public static string[] Names(IEnumerable<WeightFormat> formats) => [.. formats.Select(f => f.Traits().Name)];

    /// <summary>Parses a command-line name (<c>q8_0</c>, case-insensitive) among <paramref name="allowed"/>.</summary>
    public static WeightFormat Parse(string name, IReadOnlyCollection<WeightFormat> allowed)
    {
        foreach (WeightFormat f in allowed)
            if (string.Equals(f.Traits().Name, name, StringComparison.OrdinalIgnoreCase)) return f;
        throw new ArgumentException($"unknown weight format '{name}'; expected one of: {string.Join(", ", Names(allowed))}", nameof(name));
    }
}
