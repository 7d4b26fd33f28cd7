using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>How a bfloat16 latent cache lays out its rows, so that the attention kernels widen sixteen values with one
/// instruction: each row in chunks of 32 values, and within a chunk value i (i &lt; 16) at place 2i and value 16 + i at
/// place 2i + 1. Read as sixteen 32-bit words, a chunk's word i holds value i in its low half and value 16 + i in its
/// high half, so a shift left by 16 gives values 0–15 as float32 and clearing the low halves gives values 16–31, in
/// order (where widening sixteen values in natural order took a zero-extension and a shift). A row's last sixteen
/// values, where its width is an odd multiple of sixteen, stay in natural order. Values are rounded as
/// <see cref="NumberFormats.FloatToBF16(float)"/> rounds them.</summary>
public static class Bf16Latents
{
    /// <summary>Values a chunk holds.</summary>
    public const int Chunk = 32;

    /// <summary>Where value <paramref name="d"/> of a row <paramref name="width"/> wide is kept in it.</summary>
    public static int Place(int d, int width)
    {
        if ((uint)d >= (uint)width) throw new ArgumentOutOfRangeException(nameof(d), d, $"a row holds {width} values");
        int chunk = d & ~(Chunk - 1), i = d & (Chunk - 1);
        if (chunk + Chunk > width) return d; // the natural-order tail
        return chunk + (i < Chunk / 2 ? 2 * i : 2 * (i - Chunk / 2) + 1);
    }

    /// <summary>Rows of float32 <paramref name="width"/> wide, rounded to bfloat16 into this layout.</summary>
    public static void Pack(ReadOnlySpan<float> rows, Span<ushort> packed, int width)
    {
        CheckRows(rows.Length, packed.Length, width, nameof(packed));
        for (int row = 0; row < rows.Length; row += width)
        {
            ReadOnlySpan<float> src = rows.Slice(row, width);
            Span<ushort> dst = packed.Slice(row, width);
            int d = 0;
            for (; d + Chunk <= width; d += Chunk)
                for (int i = 0; i < Chunk / 2; i++)
                {
                    dst[d + 2 * i] = NumberFormats.FloatToBF16(src[d + i]);
                    dst[d + 2 * i + 1] = NumberFormats.FloatToBF16(src[d + Chunk / 2 + i]);
                }
            for (; d < width; d++) dst[d] = NumberFormats.FloatToBF16(src[d]);
        }
    }

    /// <summary>Rows kept in this layout as float32 in natural order (exact; sixteen values an instruction pair where
    /// the CPU has 256-bit vectors).</summary>
    public static void Unpack(ReadOnlySpan<ushort> packed, Span<float> rows, int width)
    {
        CheckRows(packed.Length, rows.Length, width, nameof(rows));
        for (int row = 0; row < packed.Length; row += width)
        {
            Span<float> dst = rows.Slice(row, width);
            int d = 0;
            for (; d + Chunk <= width; d += Chunk)
            {
                if (Vector256.IsHardwareAccelerated)
                {
                    ReadOnlySpan<uint> words = MemoryMarshal.Cast<ushort, uint>(packed.Slice(row + d, Chunk));
                    Vector256<uint> lo = Vector256.Create(words[..8]), hi = Vector256.Create(words[8..]);
                    (lo << 16).AsSingle().CopyTo(dst.Slice(d, 8));
                    (hi << 16).AsSingle().CopyTo(dst.Slice(d + 8, 8));
                    (lo & Vector256.Create(0xFFFF0000u)).AsSingle().CopyTo(dst.Slice(d + 16, 8));
                    (hi & Vector256.Create(0xFFFF0000u)).AsSingle().CopyTo(dst.Slice(d + 24, 8));
                    continue;
                }
                for (int i = 0; i < Chunk / 2; i++)
                {
                    dst[d + i] = NumberFormats.BF16ToFloat(packed[row + d + 2 * i]);
                    dst[d + Chunk / 2 + i] = NumberFormats.BF16ToFloat(packed[row + d + 2 * i + 1]);
                }
            }
            for (; d < width; d++) dst[d] = NumberFormats.BF16ToFloat(packed[row + d]);
        }
    }

    private static void CheckRows(int length, int other, int width, string otherName)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        if (length % width != 0) throw new ArgumentException($"{length} values are not whole rows of {width}");
        if (other < length) ThrowHelper.TooShort(otherName, length, other);
    }
}
