using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
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

    /// <summary>First level of a reduction of per-block lane vectors: [a0 + a2, b0 + b2, a1 + a3, b1 + b3] in each
    /// 128-bit half, so each pair of lanes of a block adds up to the block's sum. Two one-cycle unpacks and an add do
    /// what <c>vphaddd</c> does in about two cycles on Zen (measured: 0.57 ns a <c>vphaddd</c> against 0.10 an unpack,
    /// independent chains); the lanes come out in another order, which <see cref="Fold4"/> undoes. Exact integers, so
    /// every block's sum is the same.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Fold2(Vector256<int> a, Vector256<int> b) => Avx2.UnpackLow(a, b) + Avx2.UnpackHigh(a, b);

    /// <summary>Second level: from <see cref="Fold2"/>(a, b) and <see cref="Fold2"/>(c, d), each 128-bit half's
    /// [Σ a, Σ b, Σ c, Σ d] — the lanes <c>hadd(hadd(a, b), hadd(c, d))</c> gives.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Fold4(Vector256<int> ab, Vector256<int> cd) =>
        Avx2.UnpackLow(ab.AsInt64(), cd.AsInt64()).AsInt32() + Avx2.UnpackHigh(ab.AsInt64(), cd.AsInt64()).AsInt32();
}

/// <summary>The 128-bit signed-byte dot product of the quantised kernels where there is no AVX2 (ARM64 first):
/// <c>sdot</c> where the CPU has ARM's dot-product extension (Apple silicon, Graviton 2 on), else <c>smull</c> and
/// <c>sadalp</c>; on x86 the bytes sign-extended to 16 bits and <c>pmaddwd</c>. Only the lanes' total is defined (each
/// path spreads it over the four lanes differently), and it is exact: no product or partial sum can overflow.</summary>
internal static class IntDots128
{
    public static bool IsSupported => AdvSimd.IsSupported || Sse41.IsSupported;

    /// <summary><paramref name="acc"/> plus the sixteen products a_i · b_i, spread over its lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Add(Vector128<int> acc, Vector128<sbyte> a, Vector128<sbyte> b)
    {
        if (Dp.IsSupported) return Dp.DotProduct(acc, a, b);
        if (AdvSimd.IsSupported)
        {
            // |a_i · b_i| ≤ 128 · 128 = 16,384 fits a 16-bit product.
            acc = AdvSimd.AddPairwiseWideningAndAdd(acc, AdvSimd.MultiplyWideningLower(a.GetLower(), b.GetLower()));
            return AdvSimd.AddPairwiseWideningAndAdd(acc, AdvSimd.MultiplyWideningUpper(a, b));
        }
        return acc + Sse2.MultiplyAddAdjacent(Vector128.WidenLower(a), Vector128.WidenLower(b))
                   + Sse2.MultiplyAddAdjacent(Vector128.WidenUpper(a), Vector128.WidenUpper(b));
    }

    /// <summary>Σ a_i · b_i over 32 bytes at two pairs of refs, exactly.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Dot32(Vector128<sbyte> a0, Vector128<sbyte> a1, ref sbyte b) =>
        Vector128.Sum(Add(Add(Vector128<int>.Zero, a0, Vector128.LoadUnsafe(ref b)), a1, Vector128.LoadUnsafe(ref b, 16)));
}
