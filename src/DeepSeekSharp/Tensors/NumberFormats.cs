using DeepSeekSharp.Linear;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Tensors;

/// <summary>Scalar conversions of the storage formats to float32. These are the specification; bulk
/// converters in <see cref="Convert"/> use them.</summary>
public static class NumberFormats
{
    /// <summary>bfloat16 is the top half of a float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BF16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Round-to-nearest-even float32 → bfloat16 (NaN stays NaN).</summary>
    public static ushort FloatToBF16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>bfloat16 values as float32, <see cref="BF16ToFloat(ushort)"/> for each (sixteen at a time where the CPU
    /// has 256-bit vectors: the same bits).</summary>
    public static void BF16ToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination shorter than source", nameof(destination));
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= source.Length; i += 16)
            {
                (Vector256<uint> lo, Vector256<uint> hi) = Vector256.Widen(Vector256.Create(source.Slice(i, 16)));
                (lo << 16).AsSingle().CopyTo(destination.Slice(i, 8));
                (hi << 16).AsSingle().CopyTo(destination.Slice(i + 8, 8));
            }
        for (; i < source.Length; i++) destination[i] = BF16ToFloat(source[i]);
    }

    /// <summary><see cref="FloatToBF16(float)"/> for each value.</summary>
    public static void FloatToBF16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination shorter than source", nameof(destination));
        for (int i = 0; i < source.Length; i++) destination[i] = FloatToBF16(source[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F16ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    private static readonly float[] F8E4M3Table = BuildF8E4M3Table();

    /// <summary>float8 E4M3FN: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is subnormal
    /// (m × 2^-9); 0x7F and 0xFF are NaN; there are no infinities; the largest finite value is 448.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F8E4M3ToFloat(byte code) => F8E4M3Table[code];

    internal static float F8E4M3ToFloatSpec(byte code)
    {
        int sign = code >> 7, exp = (code >> 3) & 0xF, mant = code & 7;
        float magnitude;
        if (exp == 0xF && mant == 7) return float.NaN;
        if (exp == 0) magnitude = mant * MathF.Pow(2, -9);
        else magnitude = (1 + mant / 8f) * MathF.Pow(2, exp - 7);
        return sign == 1 ? -magnitude : magnitude;
    }

    private static float[] BuildF8E4M3Table()
    {
        var t = new float[256];
        for (int i = 0; i < 256; i++) t[i] = F8E4M3ToFloatSpec((byte)i);
        return t;
    }

    /// <summary>float32 → float8 E4M3FN, rounded to the nearest code (ties to the even code), saturating at ±448;
    /// NaN gives 0x7F.</summary>
    public static byte FloatToF8E4M3(float value)
    {
        if (float.IsNaN(value)) return 0x7F;
        int sign = BitConverter.SingleToInt32Bits(value) < 0 ? 0x80 : 0;
        float a = MathF.Abs(value);
        int code;
        if (a < 0.015625f) code = (int)MathF.Round(a * 512f); // subnormal steps of 2^-9 (8 steps is the smallest normal, code 8)
        else
        {
            // A normal float32 rounded to 3 mantissa bits, ties to even; the exponent re-biased from 127 to 7. What
            // rounds past 448 (to the NaN code 0x7F or beyond, infinity included) saturates at 0x7E.
            int bits = BitConverter.SingleToInt32Bits(a);
            bits += 0x7FFFF + ((bits >> 20) & 1);
            code = Math.Min((bits >> 20) - (120 << 3), 0x7E);
        }
        return (byte)(sign | code);
    }

    /// <summary>One row of an FP8 block-scaled weight: dst[c] = fp8(codes[c]) · scales[c / blockCols], where
    /// <paramref name="scales"/> is the row's line of block scales (DeepSeek-V3's weight_scale_inv).</summary>
    public static void Fp8Row(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, int blockCols, Span<float> dst)
    {
        for (int c0 = 0, s = 0; c0 < codes.Length; c0 += blockCols, s++)
        {
            int end = Math.Min(codes.Length, c0 + blockCols);
            float scale = scales[s];
            for (int c = c0; c < end; c++) dst[c] = F8E4M3Table[codes[c]] * scale;
        }
    }

    /// <summary>Converts little-endian raw elements of <paramref name="type"/> to float32.</summary>
    public static void ToFloat(WeightFormat type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        int n = destination.Length;
        if (source.Length != n * type.ElementBytes())
            throw new ArgumentException($"source holds {source.Length} bytes; {n} {type} elements need {n * type.ElementBytes()}", nameof(source));
        switch (type)
        {
            case WeightFormat.F32:
                for (int i = 0; i < n; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source.Slice(i * 4));
                break;
            case WeightFormat.F16:
                for (int i = 0; i < n; i++) destination[i] = F16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(i * 2)));
                break;
            case WeightFormat.BF16:
                for (int i = 0; i < n; i++) destination[i] = BF16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(i * 2)));
                break;
            case WeightFormat.FP8:
                for (int i = 0; i < n; i++) destination[i] = F8E4M3Table[source[i]];
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, null);
        }
    }
}
