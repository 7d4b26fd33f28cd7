using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Q4_0 (llama-quantize's fallback for Q2_K and Q3_K rows that are not whole super-blocks, e.g. V2-Lite's
/// 1408-wide expert down projections, and a file type of its own) kept in tiles of sixteen rows (AVX2): per block of
/// 32 columns 288 bytes, the bytes the file stores and nothing else:
/// <list type="bullet">
/// <item>[0, 32): the sixteen rows' fp16 scales d, row r at 2r.</item>
/// <item>[32, 288): eight nibble vectors, one per column group g (columns 4g..4g+3): byte 4r + i holds row r's code of
/// column 4g + i in its low nibble and row 8 + r's in its high nibble.</item>
/// </list>
/// <see cref="Q5Tiles"/> is this layout with a vector of fifth bits per four groups after it. The codes (0–15) are
/// their own unsigned bytes (value = (code − 8) · d): the one-token kernel (<see cref="ByteTiles.One{TCodes}"/>)
/// multiplies them as Q8_0's tiles do, from −8 · Σx, with the same float arithmetic as
/// <see cref="BlockDots{T}.V256"/>, so results are the file layout's bits. More tokens multiply a group unpacked once
/// into byte tiles (<see cref="ByteTiles.Unpack{TCodes}"/>). The row kernel over the file layout read 45–52% of the
/// probe, arithmetic-bound.</summary>
internal static unsafe class Q4Tiles
{
    public const int TileBytes = 288, BlockBytes = 18;
    internal const int NibbleOffset = 32;

    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>Writes row <paramref name="r"/> (0..15) of the group at <paramref name="group"/> from its GGUF blocks
    /// (18 bytes each: d, sixteen bytes of nibbles). Rows r and r + 8 share bytes: a group's rows are written by one
    /// thread.</summary>
    public static void SetRow(ReadOnlySpan<byte> row, byte* group, int r)
    {
        for (int b = 0; b < row.Length / BlockBytes; b++)
        {
            ReadOnlySpan<byte> blk = row.Slice(b * BlockBytes, BlockBytes);
            byte* t = group + (long)b * TileBytes;
            ((ushort*)t)[r] = (ushort)(blk[0] | blk[1] << 8);
            SetNibbles(blk.Slice(2, 16), t, r);
        }
    }

    /// <summary>Row <paramref name="r"/> of the group as GGUF blocks (the exact inverse of <see cref="SetRow"/>).</summary>
    public static void GetRow(byte* group, int r, Span<byte> row)
    {
        for (int b = 0; b < row.Length / BlockBytes; b++)
        {
            Span<byte> blk = row.Slice(b * BlockBytes, BlockBytes);
            byte* t = group + (long)b * TileBytes;
            ushort d = ((ushort*)t)[r];
            blk[0] = (byte)d;
            blk[1] = (byte)(d >> 8);
            GetNibbles(t, r, blk.Slice(2, 16));
        }
    }

    /// <summary>Row <paramref name="r"/>'s sixteen bytes of nibbles (GGUF: byte j holds code j low, code j + 16 high)
    /// into the nibble vectors of the tile at <paramref name="tile"/> (Q4_0's and Q5_0's tiles alike).</summary>
    internal static void SetNibbles(ReadOnlySpan<byte> qs, byte* tile, int r)
    {
        int h = r >> 3, e0 = 4 * (r & 7);
        for (int j = 0; j < 32; j++)
        {
            int low = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
            byte* nibble = tile + NibbleOffset + 32 * (j >> 2) + e0 + (j & 3);
            *nibble = h == 0 ? (byte)((*nibble & 0xF0) | low) : (byte)((*nibble & 0x0F) | low << 4);
        }
    }

    /// <summary>The inverse of <see cref="SetNibbles"/>.</summary>
    internal static void GetNibbles(byte* tile, int r, Span<byte> qs)
    {
        int h = r >> 3, e0 = 4 * (r & 7);
        qs.Clear();
        for (int j = 0; j < 32; j++)
        {
            int low = (tile[NibbleOffset + 32 * (j >> 2) + e0 + (j & 3)] >> 4 * h) & 0xF;
            if (j < 16) qs[j] |= (byte)low;
            else qs[j - 16] |= (byte)(low << 4);
        }
    }

    /// <summary>Token <paramref name="token"/> of <paramref name="a"/> (quantised per 32) against the sixteen rows of
    /// the group at <paramref name="group"/>: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One(byte* group, int blocks, QuantizedActivations a, int token, float* lanes) =>
        ByteTiles.One<Codes>(group, blocks, a, token, lanes);

    /// <summary>A column group's codes: one load, a shift for rows 8–15, one mask.</summary>
    internal readonly struct Codes : IByteTileCodes, ITileRows
    {
        public static void SetRow(ReadOnlySpan<byte> row, byte* group, int r) => Q4Tiles.SetRow(row, group, r);
        public static void GetRow(byte* group, int r, Span<byte> row) => Q4Tiles.GetRow(group, r, row);

        public static int TileBytes => Q4Tiles.TileBytes;
        public static int Bias => 8;
        public static int MaxCode => 15;

        /// <summary>Eight (2,304 bytes, about the bytes of Q8_0's four and Q5_0's eight).</summary>
        public static int Ahead => 8;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Half(byte* tile, int g, int half)
        {
            Vector256<byte> nibbles = Vector256.Load(tile + NibbleOffset + 32 * g);
            Vector256<byte> codes = half == 0 ? nibbles : Vector256.ShiftRightLogical(nibbles.AsUInt16(), 4).AsByte();
            return codes & Vector256.Create((byte)0x0F);
        }
    }
}
