using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>ggml's first block formats, 32 weights a block. In each, byte j of the 16 code bytes holds weight j in
/// its low nibble and weight j + 16 in its high nibble; Q5 formats keep the fifth bits in a 32-bit mask (bit j for
/// weight j).
/// <list type="bullet">
/// <item>Q4_0 (18 B): fp16 d, codes: w = d·(q − 8).</item>
/// <item>Q4_1 (20 B): fp16 d, fp16 m, codes: w = d·q + m.</item>
/// <item>Q5_0 (22 B): fp16 d, u32 high bits, codes: w = d·(q − 16).</item>
/// <item>Q5_1 (24 B): fp16 d, fp16 m, u32 high bits, codes: w = d·q + m.</item>
/// </list>
/// Quantisers are ggml's reference ones (quantize_row_q*_ref).</summary>
public static class LegacyQuants
{
    private static float Half(ReadOnlySpan<byte> b, int at) => HalfTable.Values[BinaryPrimitives.ReadUInt16LittleEndian(b[at..])];
    private static void SetHalf(Span<byte> b, int at, float v) => BinaryPrimitives.WriteUInt16LittleEndian(b[at..], HalfTable.FromFloat(v));

    public static void DequantizeQ4_0(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 32; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 18, 18);
            float d = Half(blk, 0);
            for (int j = 0; j < 16; j++)
            {
                dst[b * 32 + j] = d * ((blk[2 + j] & 0xF) - 8);
                dst[b * 32 + j + 16] = d * ((blk[2 + j] >> 4) - 8);
            }
        }
    }

    public static void DequantizeQ4_1(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 32; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 20, 20);
            float d = Half(blk, 0), m = Half(blk, 2);
            for (int j = 0; j < 16; j++)
            {
                dst[b * 32 + j] = d * (blk[4 + j] & 0xF) + m;
                dst[b * 32 + j + 16] = d * (blk[4 + j] >> 4) + m;
            }
        }
    }

    public static void DequantizeQ5_0(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 32; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 22, 22);
            float d = Half(blk, 0);
            uint qh = BinaryPrimitives.ReadUInt32LittleEndian(blk[2..]);
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
                dst[b * 32 + j] = d * (((blk[6 + j] & 0xF) | h0) - 16);
                dst[b * 32 + j + 16] = d * (((blk[6 + j] >> 4) | h1) - 16);
            }
        }
    }

    public static void DequantizeQ5_1(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 32; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 24, 24);
            float d = Half(blk, 0), m = Half(blk, 2);
            uint qh = BinaryPrimitives.ReadUInt32LittleEndian(blk[4..]);
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
                dst[b * 32 + j] = d * ((blk[8 + j] & 0xF) | h0) + m;
                dst[b * 32 + j + 16] = d * ((blk[8 + j] >> 4) | h1) + m;
            }
        }
    }

    /// <summary>The value of largest magnitude, with its sign.</summary>
    private static float SignedMax(ReadOnlySpan<float> v)
    {
        float amax = 0, max = 0;
        foreach (float f in v)
            if (MathF.Abs(f) > amax) (amax, max) = (MathF.Abs(f), f);
        return max;
    }

    private static (float Min, float Max) Range(ReadOnlySpan<float> v)
    {
        float min = float.MaxValue, max = float.MinValue;
        foreach (float f in v) (min, max) = (MathF.Min(min, f), MathF.Max(max, f));
        return (min, max);
    }

    public static void QuantizeQ4_0(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / 32; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 32, 32);
            Span<byte> blk = dst.Slice(b * 18, 18);
            float d = SignedMax(v) / -8, id = d != 0 ? 1 / d : 0;
            SetHalf(blk, 0, d);
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(15, (int)(sbyte)(v[j] * id + 8.5f)), q1 = Math.Min(15, (int)(sbyte)(v[j + 16] * id + 8.5f));
                blk[2 + j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    public static void QuantizeQ4_1(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / 32; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 32, 32);
            Span<byte> blk = dst.Slice(b * 20, 20);
            var (min, max) = Range(v);
            float d = (max - min) / 15, id = d != 0 ? 1 / d : 0;
            SetHalf(blk, 0, d);
            SetHalf(blk, 2, min);
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(15, (int)(sbyte)((v[j] - min) * id + 0.5f)), q1 = Math.Min(15, (int)(sbyte)((v[j + 16] - min) * id + 0.5f));
                blk[4 + j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    public static void QuantizeQ5_0(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / 32; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 32, 32);
            Span<byte> blk = dst.Slice(b * 22, 22);
            float d = SignedMax(v) / -16, id = d != 0 ? 1 / d : 0;
            SetHalf(blk, 0, d);
            uint qh = 0;
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(31, (int)(sbyte)(v[j] * id + 16.5f)), q1 = Math.Min(31, (int)(sbyte)(v[j + 16] * id + 16.5f));
                blk[6 + j] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                qh |= (uint)((q0 & 0x10) >> 4) << j;
                qh |= (uint)((q1 & 0x10) >> 4) << (j + 16);
            }
            BinaryPrimitives.WriteUInt32LittleEndian(blk[2..], qh);
        }
    }

    public static void QuantizeQ5_1(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / 32; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 32, 32);
            Span<byte> blk = dst.Slice(b * 24, 24);
            var (min, max) = Range(v);
            float d = (max - min) / 31, id = d != 0 ? 1 / d : 0;
            SetHalf(blk, 0, d);
            SetHalf(blk, 2, min);
            uint qh = 0;
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(31, (int)(sbyte)((v[j] - min) * id + 0.5f)), q1 = Math.Min(31, (int)(sbyte)((v[j + 16] - min) * id + 0.5f));
                blk[8 + j] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                qh |= (uint)((q0 & 0x10) >> 4) << j;
                qh |= (uint)((q1 & 0x10) >> 4) << (j + 16);
            }
            BinaryPrimitives.WriteUInt32LittleEndian(blk[4..], qh);
        }
    }

    /// <summary>The specification (see <see cref="BlockDots{T}.Scalar"/>).</summary>
    internal static float Scalar(GgmlType type, ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd) => type == GgmlType.Q5_0
        ? BlockDots<Q5_0Codes>.Scalar(w, xq, xd)
        : BlockDots<Q4_0Codes>.Scalar(w, xq, xd);

    internal static float V128(GgmlType type, ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd) => type == GgmlType.Q5_0
        ? BlockDots<Q5_0Codes>.V128(w, xq, xd)
        : BlockDots<Q4_0Codes>.V128(w, xq, xd);

    internal static float V256(GgmlType type, ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum) => type == GgmlType.Q5_0
        ? BlockDots<Q5_0Codes>.V256(ref MemoryMarshal.GetReference(w), xd.Length, xq, xd, xsum)
        : BlockDots<Q4_0Codes>.V256(ref MemoryMarshal.GetReference(w), xd.Length, xq, xd, xsum);

    /// <summary>Two tokens against one row (see <see cref="BlockDots{T}.V256x2"/>).</summary>
    internal static void V256x2(GgmlType type, ReadOnlySpan<byte> w, int blocks, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> xsum, Span<float> result)
    {
        if (type == GgmlType.Q5_0) BlockDots<Q5_0Codes>.V256x2(ref MemoryMarshal.GetReference(w), blocks, xq, xStride, xd, dStride, xsum, result);
        else BlockDots<Q4_0Codes>.V256x2(ref MemoryMarshal.GetReference(w), blocks, xq, xStride, xd, dStride, xsum, result);
    }

    /// <summary>Four tokens against one row (see <see cref="BlockDots{T}.V256x4"/>).</summary>
    internal static void V256x4(GgmlType type, ReadOnlySpan<byte> w, int blocks, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> xsum, Span<float> result)
    {
        if (type == GgmlType.Q5_0) BlockDots<Q5_0Codes>.V256x4(ref MemoryMarshal.GetReference(w), blocks, xq, xStride, xd, dStride, xsum, result);
        else BlockDots<Q4_0Codes>.V256x4(ref MemoryMarshal.GetReference(w), blocks, xq, xStride, xd, dStride, xsum, result);
    }
}

/// <summary>Q4_0's codes: nibbles (weight j low, j + 16 high) minus 8.</summary>
internal readonly struct Q4_0Codes : IBlockCodes
{
    public static int Bytes => 18;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Codes(ref byte block) => Unsigned(ref block).AsSByte() - Vector256.Create((sbyte)8);

    public static int Code(ReadOnlySpan<byte> block, int i) => (i < 16 ? block[2 + i] & 0xF : block[2 + i - 16] >> 4) - 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Codes128(ref byte block, out Vector128<sbyte> low, out Vector128<sbyte> high)
    {
        Q5_0Codes.Nibbles128(ref Unsafe.Add(ref block, 2), out Vector128<byte> l, out Vector128<byte> h);
        low = l.AsSByte() - Vector128.Create((sbyte)8);
        high = h.AsSByte() - Vector128.Create((sbyte)8);
    }

    public static int Offset => 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Unsigned(ref byte block) => Q5_0Codes.Nibbles(ref Unsafe.Add(ref block, 2));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void UnsignedPair(ref byte block, out Vector256<byte> low, out Vector256<byte> high) =>
        Q5_0Codes.NibblePair(ref Unsafe.Add(ref block, 2), 18, out low, out high);
}

/// <summary>Q5_0's codes: nibbles plus the fifth bits from the 32-bit mask (spread to bytes by a shuffle), minus 16.</summary>
internal readonly struct Q5_0Codes : IBlockCodes
{
    public static int Bytes => 22;

    /// <summary>Sixteen packed bytes' low nibbles (codes 0–15) and high nibbles (16–31).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Nibbles128(ref byte codes, out Vector128<byte> low, out Vector128<byte> high)
    {
        Vector128<byte> packed = Vector128.LoadUnsafe(ref codes);
        low = packed & Vector128.Create((byte)0x0F);
        high = Vector128.ShiftRightLogical(packed, 4);
    }

    /// <summary>Codes 0–15 and 16–31: nibbles, the fifth bit from the 32-bit mask (bit i of it for code i: byte
    /// i / 8 of the mask spread over eight lanes by a shuffle, each lane testing its own bit), minus 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Codes128(ref byte block, out Vector128<sbyte> low, out Vector128<sbyte> high)
    {
        Nibbles128(ref Unsafe.Add(ref block, 6), out Vector128<byte> l, out Vector128<byte> h);
        Vector128<byte> mask = Vector128.Create(Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref block, 2))).AsByte();
        Vector128<byte> bit = Vector128.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128), five = Vector128.Create((byte)0x10);
        Vector128<byte> m0 = Vector128.Shuffle(mask, Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)) & bit;
        Vector128<byte> m1 = Vector128.Shuffle(mask, Vector128.Create((byte)2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)) & bit;
        low = (l | (Vector128.Equals(m0, bit) & five)).AsSByte() - Vector128.Create((sbyte)16);
        high = (h | (Vector128.Equals(m1, bit) & five)).AsSByte() - Vector128.Create((sbyte)16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> Nibbles(ref byte codes)
    {
        Vector128<byte> packed = Vector128.LoadUnsafe(ref codes), low = Vector128.Create((byte)0x0F);
        return Vector256.Create(packed & low, Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & low);
    }

    /// <summary>The packed nibbles at <paramref name="codes"/> and <paramref name="codes"/> + <paramref name="stride"/>:
    /// both blocks' low nibbles (codes 0–15) in <paramref name="low"/>, their high nibbles (16–31) in
    /// <paramref name="high"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void NibblePair(ref byte codes, int stride, out Vector256<byte> low, out Vector256<byte> high)
    {
        Vector256<byte> packed = Vector256.Create(Vector128.LoadUnsafe(ref codes), Vector128.LoadUnsafe(ref codes, (nuint)stride));
        low = packed & Vector256.Create((byte)0x0F);
        high = Vector256.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & Vector256.Create((byte)0x0F);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void UnsignedPair(ref byte block, out Vector256<byte> low, out Vector256<byte> high) =>
        FifthBitPair(ref Unsafe.Add(ref block, 2), Bytes, out low, out high);

    /// <summary><see cref="UnsignedPair"/> from the mask word at <paramref name="mask"/> (its sixteen bytes of nibbles
    /// follow it) and the next block's <paramref name="stride"/> bytes on: Q5_0's layout, and Q5_1's after its minimum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void FifthBitPair(ref byte mask, int stride, out Vector256<byte> low, out Vector256<byte> high)
    {
        NibblePair(ref Unsafe.Add(ref mask, 4), stride, out low, out high);
        // Both mask words in every 64-bit lane; byte k of the eight goes to eight bytes, each keeping its own bit:
        // bits 0–15 of the first block's word (bytes 0, 1) then of the second's (bytes 4, 5) for the low codes,
        // bits 16–31 (bytes 2, 3 and 6, 7) for the high ones.
        ulong words = Unsafe.ReadUnaligned<uint>(ref mask) | (ulong)Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref mask, stride)) << 32;
        if (Avx512Vbmi.VL.IsSupported)
        {
            // vpmultishiftqb: byte j takes the eight bits of its 64-bit lane that start at its control (mod 64), so a
            // control of (bit − 4) mod 64 leaves the weight's own mask bit at bit 4 — 0x10 once masked. Bits 0–15 of
            // the first word then of the second for the low codes, 16–31 for the high (as the shuffles below).
            Vector256<ulong> w2 = Vector256.Create(words);
            low |= Avx512Vbmi.VL.MultiShift(Vector256.Create(0x030201003F3E3D3CUL, 0x0B0A090807060504UL, 0x232221201F1E1D1CUL, 0x2B2A292827262524UL).AsByte(), w2)
                   & Vector256.Create((byte)0x10);
            high |= Avx512Vbmi.VL.MultiShift(Vector256.Create(0x131211100F0E0D0CUL, 0x1B1A191817161514UL, 0x333231302F2E2D2CUL, 0x3B3A393837363534UL).AsByte(), w2)
                    & Vector256.Create((byte)0x10);
            return;
        }
        Vector256<byte> both = Vector256.Create(words).AsByte();
        Vector256<byte> spreadLow = Avx2.Shuffle(both, Vector256.Create(0UL, 0x0101010101010101, 0x0404040404040404, 0x0505050505050505).AsByte());
        Vector256<byte> spreadHigh = Avx2.Shuffle(both, Vector256.Create(0x0202020202020202, 0x0303030303030303, 0x0606060606060606, 0x0707070707070707).AsByte());
        low |= FifthBits(spreadLow);
        high |= FifthBits(spreadHigh);
    }

    /// <summary>0x10 in each byte whose own bit (bit i mod 8 of byte i) is set in <paramref name="spread"/>, a mask
    /// byte copied to eight bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> FifthBits(Vector256<byte> spread)
    {
        Vector256<byte> bitMask = Vector256.Create(0x8040201008040201).AsByte();
        return Vector256.Equals(spread & bitMask, bitMask) & Vector256.Create((byte)0x10);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Codes(ref byte block) => Unsigned(ref block).AsSByte() - Vector256.Create((sbyte)16);

    public static int Offset => 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Unsigned(ref byte block)
    {
        // Constants written in place (see the note on vector constants in BlockDots): byte i of the mask word goes to
        // bytes 8i..8i+7, and each of those keeps its own bit.
        if (Avx512Vbmi.VL.IsSupported)
        {
            // As in UnsignedPair: weight j's mask bit moved to bit 4 of byte j by one vpmultishiftqb.
            Vector256<byte> bits = Avx512Vbmi.VL.MultiShift(Vector256.Create(0x030201003F3E3D3CUL, 0x0B0A090807060504UL, 0x131211100F0E0D0CUL,
                0x1B1A191817161514UL).AsByte(), Vector256.Create((ulong)Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref block, 2))));
            return Nibbles(ref Unsafe.Add(ref block, 6)) | (bits & Vector256.Create((byte)0x10));
        }
        Vector256<byte> bitSpread = Vector256.Create(0UL, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303).AsByte();
        Vector256<byte> spread = Avx2.Shuffle(Vector256.Create(Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref block, 2))).AsByte(), bitSpread);
        return Nibbles(ref Unsafe.Add(ref block, 6)) | FifthBits(spread);
    }

    public static int Code(ReadOnlySpan<byte> block, int i)
    {
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[2..]);
        int low = i < 16 ? block[6 + i] & 0xF : block[6 + i - 16] >> 4;
        return (low | (int)((qh >> i) & 1) << 4) - 16;
    }
}

/// <summary>Q4_1's codes: Q4_0's nibbles after a second fp16, the block's minimum m (w = d · q + m, q in 0..15). As an
/// <see cref="IBlockCodes"/> the codes are q − 8, so <see cref="BlockDots{T}"/>' integer sums serve it; the minimum's
/// term is <see cref="MinBlockDots{T}"/>'.</summary>
internal readonly struct Q4_1Codes : IBlockCodes
{
    public static int Bytes => 20;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Codes(ref byte block) => Q4_0Codes.Codes(ref Unsafe.Add(ref block, 2));

    public static int Code(ReadOnlySpan<byte> block, int i) => Q4_0Codes.Code(block[2..], i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Codes128(ref byte block, out Vector128<sbyte> low, out Vector128<sbyte> high) =>
        Q4_0Codes.Codes128(ref Unsafe.Add(ref block, 2), out low, out high);

    public static int Offset => 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Unsigned(ref byte block) => Q4_0Codes.Unsigned(ref Unsafe.Add(ref block, 2));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void UnsignedPair(ref byte block, out Vector256<byte> low, out Vector256<byte> high) =>
        Q5_0Codes.NibblePair(ref Unsafe.Add(ref block, 4), 20, out low, out high);
}

/// <summary>Q5_1's codes: Q5_0's mask word and nibbles after a second fp16, the block's minimum m (w = d · q + m, q in
/// 0..31); as an <see cref="IBlockCodes"/>, q − 16 (see <see cref="Q4_1Codes"/>).</summary>
internal readonly struct Q5_1Codes : IBlockCodes
{
    public static int Bytes => 24;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Codes(ref byte block) => Q5_0Codes.Codes(ref Unsafe.Add(ref block, 2));

    public static int Code(ReadOnlySpan<byte> block, int i) => Q5_0Codes.Code(block[2..], i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Codes128(ref byte block, out Vector128<sbyte> low, out Vector128<sbyte> high) =>
        Q5_0Codes.Codes128(ref Unsafe.Add(ref block, 2), out low, out high);

    public static int Offset => 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Unsigned(ref byte block) => Q5_0Codes.Unsigned(ref Unsafe.Add(ref block, 2));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void UnsignedPair(ref byte block, out Vector256<byte> low, out Vector256<byte> high) =>
        Q5_0Codes.FifthBitPair(ref Unsafe.Add(ref block, 4), 24, out low, out high);
}

/// <summary>Dot products of rows of a 32-weight format with a per-block minimum (Q4_1, Q5_1: w = d·q + m, q ≥ 0)
/// against activations quantised per 32. Per block b the exact integers I_b = Σ q·x (<see cref="BlockDots{T}"/>'
/// sums of (q − offset)·x, plus offset · Σx) and S_b = Σx, then in lane b mod 8 of two sums
/// A = fma(I_b, d_b·dx_b, A) and M = fma(S_b, m_b·dx_b, M); the result is Reduce8(A) + Reduce8(M)
/// (<see cref="BlockDots{T}.Reduce8"/>). <see cref="Scalar"/> is the specification; <see cref="V256"/> computes its
/// bits eight blocks at a time.</summary>
internal static class MinBlockDots<T> where T : struct, IBlockCodes
{
    /// <summary>Σ w·x for a row of <paramref name="xd"/>.Length blocks, on the fastest path this CPU has.</summary>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum)
    {
        if (w.Length != xd.Length * T.Bytes || xq.Length != xd.Length * 32) ThrowHelper.LengthMismatch(nameof(xq), xd.Length * 32, xq.Length);
        if (xsum.Length < xd.Length) ThrowHelper.TooShort(nameof(xsum), xd.Length, xsum.Length);
        if (Avx2.IsSupported) return V256(ref MemoryMarshal.GetReference(w), xd.Length, xq, xd, xsum);
        return IntDots128.IsSupported ? V128(w, xq, xd, xsum) : Scalar(w, xq, xd, xsum);
    }

    /// <summary>128-bit vectors (ARM64, or x86 without AVX2): each block's Σ code·x from its codes less the offset
    /// (<see cref="IBlockCodes.Codes128"/>) plus the offset times Σx — the same exact integer — then the
    /// specification's fused steps into lanes b mod 8: its bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float V128(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum)
    {
        Span<float> a = stackalloc float[8], m = stackalloc float[8];
        a.Clear();
        m.Clear();
        ref byte wb = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        for (int b = 0; b < xd.Length; b++)
        {
            ref byte blk = ref Unsafe.Add(ref wb, b * T.Bytes);
            T.Codes128(ref blk, out Vector128<sbyte> low, out Vector128<sbyte> high);
            int isum = IntDots128.Dot32(low, high, ref Unsafe.Add(ref x, b * 32)) + T.Offset * xsum[b];
            float d = HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref blk)], min = HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref blk, 2))];
            a[b % 8] = MathF.FusedMultiplyAdd(isum, d * xd[b], a[b % 8]);
            m[b % 8] = MathF.FusedMultiplyAdd(xsum[b], min * xd[b], m[b % 8]);
        }
        return BlockDots<T>.Reduce8(Vector256.Create<float>(a)) + BlockDots<T>.Reduce8(Vector256.Create<float>(m));
    }

    /// <summary>The specification (see the class).</summary>
    public static float Scalar(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum)
    {
        Span<float> a = stackalloc float[8], m = stackalloc float[8];
        a.Clear();
        m.Clear();
        for (int b = 0; b < xd.Length; b++)
        {
            ReadOnlySpan<byte> blk = w.Slice(b * T.Bytes, T.Bytes);
            int isum = 0;
            for (int i = 0; i < 32; i++) isum += (T.Code(blk, i) + T.Offset) * xq[b * 32 + i];
            float d = HalfTable.Values[BitConverter.ToUInt16(blk)], min = HalfTable.Values[BitConverter.ToUInt16(blk[2..])];
            a[b % 8] = MathF.FusedMultiplyAdd(isum, d * xd[b], a[b % 8]);
            m[b % 8] = MathF.FusedMultiplyAdd(xsum[b], min * xd[b], m[b % 8]);
        }
        return BlockDots<T>.Reduce8(Vector256.Create<float>(a)) + BlockDots<T>.Reduce8(Vector256.Create<float>(m));
    }

    /// <summary>AVX2: eight blocks' I and S at once (the integer sums of <see cref="BlockDots{T}"/>), their d and m
    /// gathered as its scales are, one fused step per vector; blocks past the last whole eight one by one into their
    /// lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float V256(ref byte wb, int n, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum)
    {
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        ref float dx = ref MemoryMarshal.GetReference(xd);
        ref short u = ref MemoryMarshal.GetReference(xsum);
        ref byte w = ref wb;
        Vector256<float> a = Vector256<float>.Zero, m = Vector256<float>.Zero;
        int b = 0;
        for (; b + 8 <= n; b += 8)
        {
            Vector256<int> s = Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref u));
            Vector256<int> i = BlockDots<T>.Sums8(ref w, ref x, ref u, 0) + s * T.Offset;
            Vector256<float> dxs = Vector256.LoadUnsafe(ref dx);
            a = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i), BlockDots<T>.Scales8(ref w, 0) * dxs, a);
            m = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(s), BlockDots<T>.Scales8(ref Unsafe.Add(ref w, 2), 0) * dxs, m);
            w = ref Unsafe.Add(ref w, 8 * T.Bytes);
            x = ref Unsafe.Add(ref x, 256);
            dx = ref Unsafe.Add(ref dx, 8);
            u = ref Unsafe.Add(ref u, 8);
        }
        if (b < n)
        {
            Span<float> la = stackalloc float[8], lm = stackalloc float[8];
            a.CopyTo(la);
            m.CopyTo(lm);
            for (int l = 0; b < n; b++, l++)
            {
                ref byte blk = ref Unsafe.Add(ref wb, b * T.Bytes);
                float dxb = xd[b];
                int isum = Vector256.Sum(IntDots.Bytes4(T.Unsigned(ref blk), Vector256.LoadUnsafe(ref MemoryMarshal.GetReference(xq), (nuint)(b * 32))));
                la[l] = MathF.FusedMultiplyAdd(isum, HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref blk)] * dxb, la[l]);
                lm[l] = MathF.FusedMultiplyAdd(xsum[b], HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref blk, 2))] * dxb, lm[l]);
            }
            a = Vector256.Create<float>(la);
            m = Vector256.Create<float>(lm);
        }
        return BlockDots<T>.Reduce8(a) + BlockDots<T>.Reduce8(m);
    }
}
