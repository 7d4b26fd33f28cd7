using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>The 256-bit integer multiply-adds of the quantised dot kernels: one AVX-VNNI instruction where the CPU has
/// it (<c>vpdpbusd</c>, <c>vpdpwssd</c>), else the AVX2 sequence. Both give the same integers: VNNI never saturates,
/// and no code these kernels pass makes <c>vpmaddubsw</c>'s 16-bit pair sums saturate (an unsigned code ≤ 128 — |w|
/// of an 8-bit code, or a 4/5/6-bit code — against |x| ≤ 127 sums to at most 2 · 128 · 127 = 32,512 a pair).
/// <c>AvxVnni.IsSupported</c> is a constant to the JIT, so each kernel is compiled with one of the two.</summary>
internal static class IntDots
{
    /// <summary>Each int32 lane: the sum of four adjacent u8 × s8 products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Bytes4(Vector256<byte> u, Vector256<sbyte> s) =>
        AvxVnni.IsSupported
            ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, s)
            : Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256.Create((short)1));

    /// <summary><paramref name="acc"/> plus, in each int32 lane, the sum of four adjacent u8 × s8 products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> AddBytes4(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s) =>
        AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(acc, u, s) : acc + Bytes4(u, s);

    /// <summary><paramref name="acc"/> plus, in each int32 lane, the sum of two adjacent s16 × s16 products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> AddPairs(Vector256<int> acc, Vector256<short> a, Vector256<short> b) =>
        AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(acc, a, b) : acc + Avx2.MultiplyAddAdjacent(a, b);
}
