namespace DeepSeekSharp.Tensors;

/// <summary>Element types a checkpoint can store.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    /// <summary>float8 E4M3FN (bias 7, no infinities, 0x7F/0xFF NaN); real value = code × block scale.</summary>
    F8E4M3,
}

public static class DTypeInfo
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this DType t) => t switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.F8E4M3 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, null),
    };

    /// <summary>Parses a safetensors dtype string; null when the name is not one we read.</summary>
    public static DType? FromSafeTensorsName(string name) => name switch
    {
        "F32" => DType.F32,
        "F16" => DType.F16,
        "BF16" => DType.BF16,
        "F8_E4M3" => DType.F8E4M3,
        _ => null,
    };

    public static string SafeTensorsName(this DType t) => t switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.F8E4M3 => "F8_E4M3",
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, null),
    };

    public const string SupportedSafeTensorsNames = "F32, F16, BF16, F8_E4M3";
}
