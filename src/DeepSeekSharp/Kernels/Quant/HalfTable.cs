using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>fp16 → float32: a table of every 16-bit pattern (256 KB; the scalar paths' one load), and the same
/// values computed in registers for the vector kernels. A kernel that looks scales up in the table touches a line
/// of it per distinct scale; with a real model's spread of block scales those lines compete with the streamed
/// weights for L1 (a Q8_0 row kernel over 281 MB: ~28 GB/s with the near-constant scales of a random checkpoint,
/// ~21 with random scales), while the conversion in registers costs the same for every scale. The conversion is
/// written once per vector width (sixteen values with AVX-512, eight with AVX2), the same steps in each.</summary>
internal static class HalfTable
{
    public static readonly float[] Values = Build();

    private static float[] Build()
    {
        var t = new float[65536];
        for (int i = 0; i < t.Length; i++) t[i] = (float)BitConverter.UInt16BitsToHalf((ushort)i);
        return t;
    }

    public static ushort FromFloat(float f) => BitConverter.HalfToUInt16Bits((Half)f);

    /// <summary>Sixteen fp16 values as float32, exactly (<see cref="Values"/> for every pattern): the exponent and
    /// mantissa shifted into place and rescaled by 2^112 (exact for normal and subnormal halves); infinities and NaNs
    /// keep an all-ones exponent.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle(Vector256<ushort> h)
    {
        Vector512<int> v = Avx512F.ConvertToVector512Int32(h);
        Vector512<int> magnitude = v & Vector512.Create(0x7FFF), bits = magnitude << 13;
        Vector512<float> f = bits.AsSingle() * Vector512.Create(5.192296858534828e33f); // 2^112
        Vector512<int> special = Vector512.GreaterThanOrEqual(magnitude, Vector512.Create(0x7C00));
        Vector512<int> r = Vector512.ConditionalSelect(special, bits | Vector512.Create(0x7F800000), f.AsInt32());
        return (r | ((v & Vector512.Create(0x8000)) << 16)).AsSingle();
    }

    /// <summary><see cref="ToSingle(Vector256{ushort})"/> for eight values in 256-bit registers (AVX2): half the work
    /// where eight are wanted (a 512-bit operation costs two on CPUs that split them), and no table where AVX-512 is
    /// absent.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingle(Vector128<ushort> h)
    {
        Vector256<int> v = Avx2.ConvertToVector256Int32(h);
        Vector256<int> magnitude = v & Vector256.Create(0x7FFF), bits = magnitude << 13;
        Vector256<float> f = bits.AsSingle() * Vector256.Create(5.192296858534828e33f); // 2^112
        Vector256<int> special = Vector256.GreaterThanOrEqual(magnitude, Vector256.Create(0x7C00));
        Vector256<int> r = Vector256.ConditionalSelect(special, bits | Vector256.Create(0x7F800000), f.AsInt32());
        return (r | ((v & Vector256.Create(0x8000)) << 16)).AsSingle();
    }
}
