using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Q5_0 (llama-quantize's choice for rows that fit no k-quant block, e.g. V2-Lite's 1408-wide expert down
/// projections in a Q4_K_M file) kept in tiles of sixteen rows (AVX2): per block of 32 columns
/// 352 bytes, the bytes the file stores and nothing else, arranged so that a column group of <see cref="ByteTiles"/>
/// comes out of two loads and a few shifts and masks:
/// <list type="bullet">
/// <item>[0, 32): the sixteen rows' fp16 scales d, row r at 2r.</item>
/// <item>[32, 288): eight nibble vectors, one per column group g (columns 4g..4g+3), as <see cref="Q4Tiles"/>': byte
/// 4r + i holds the low four bits of row r's code of column 4g + i in its low nibble and those of row 8 + r in its
/// high nibble.</item>
/// <item>[288, 352): two vectors of fifth bits, groups 0–3 then 4–7: bit 2(g mod 4) + h of byte 4r + i is the fifth
/// bit of row 8h + r's code of column 4g + i, so one 16-bit shift and one mask put it at bit 4 of its byte.</item>
/// </list>
/// The codes (0–31) are their own unsigned bytes (value = (code − 16) · d): the one-token kernel
/// (<see cref="ByteTiles.One{TCodes}"/>) multiplies them as Q8_0's tiles do, from −16 · Σx, with the same float
/// arithmetic as <see cref="BlockDots{T}.V256"/>, so results are the file layout's bits. More tokens multiply a group
/// unpacked once into byte tiles (<see cref="ByteTiles.Unpack{TCodes}"/>, AVX-VNNI) or int16 panels (<see cref="ByteTiles.PackShorts{TCodes}"/>). A row kernel over the file layout spends ~1.75× the time per
/// byte of a tile kernel rebuilding each block's fifth bits.</summary>
internal static unsafe class Q5Tiles
{
    public const int TileBytes = 352, BlockBytes = 22;
    private const int NibbleOffset = Q4Tiles.NibbleOffset, HighOffset = 288;

    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>Writes row <paramref name="r"/> (0..15) of the group at <paramref name="group"/> from its GGUF blocks
    /// (22 bytes each: d, the 32 fifth bits, sixteen bytes of nibbles). Rows r and r + 8 share bytes: a group's rows
    /// are written by one thread.</summary>
    public static void SetRow(ReadOnlySpan<byte> row, byte* group, int r)
    {
        int h = r >> 3, e0 = 4 * (r & 7);
        for (int b = 0; b < row.Length / BlockBytes; b++)
        {
            ReadOnlySpan<byte> blk = row.Slice(b * BlockBytes, BlockBytes);
            byte* t = group + (long)b * TileBytes;
            ((ushort*)t)[r] = (ushort)(blk[0] | blk[1] << 8);
            Q4Tiles.SetNibbles(blk.Slice(6, 16), t, r);
            uint qh = (uint)(blk[2] | blk[3] << 8 | blk[4] << 16 | blk[5] << 24);
            for (int j = 0; j < 32; j++)
            {
                int g = j >> 2, bit = 2 * (g & 3) + h;
                byte* high = t + HighOffset + 32 * (g >> 2) + e0 + (j & 3);
                *high = (byte)((*high & ~(1 << bit)) | (int)((qh >> j) & 1) << bit);
            }
        }
    }

    /// <summary>Row <paramref name="r"/> of the group as GGUF blocks (the exact inverse of <see cref="SetRow"/>).</summary>
    public static void GetRow(byte* group, int r, Span<byte> row)
    {
        int h = r >> 3, e0 = 4 * (r & 7);
        for (int b = 0; b < row.Length / BlockBytes; b++)
        {
            Span<byte> blk = row.Slice(b * BlockBytes, BlockBytes);
            byte* t = group + (long)b * TileBytes;
            ushort d = ((ushort*)t)[r];
            blk[0] = (byte)d;
            blk[1] = (byte)(d >> 8);
            Q4Tiles.GetNibbles(t, r, blk.Slice(6, 16));
            uint qh = 0;
            for (int j = 0; j < 32; j++)
            {
                int g = j >> 2;
                qh |= (uint)((t[HighOffset + 32 * (g >> 2) + e0 + (j & 3)] >> (2 * (g & 3) + h)) & 1) << j;
            }
            blk[2] = (byte)qh;
            blk[3] = (byte)(qh >> 8);
            blk[4] = (byte)(qh >> 16);
            blk[5] = (byte)(qh >> 24);
        }
    }

    /// <summary>Token <paramref name="token"/> of <paramref name="a"/> (quantised per 32) against the sixteen rows of
    /// the group at <paramref name="group"/>: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One(byte* group, int blocks, QuantizedActivations a, int token, float* lanes) =>
        ByteTiles.One<Codes>(group, blocks, a, token, lanes);

    /// <summary>A column group's codes from its nibble vector and the fifth bits: two loads, two 16-bit shifts of the
    /// fifth bits (none for some groups), one of the nibbles, three masks and two ors.</summary>
    internal readonly struct Codes : IByteTileCodes, ITileRows
    {
        public static void SetRow(ReadOnlySpan<byte> row, byte* group, int r) => Q5Tiles.SetRow(row, group, r);
        public static void GetRow(byte* group, int r, Span<byte> row) => Q5Tiles.GetRow(group, r, row);

        public static int TileBytes => Q5Tiles.TileBytes;
        public static int Bias => 16;
        public static int MaxCode => 31;

        /// <summary>Eight (2,816 bytes; each byte takes longer than Q8_0's to unpack): one-token products over 190 MB
        /// of [2048, 1408] matrices on Zen 3, the distances alternating pass by pass in one process, read 60–61% of the
        /// probe on one thread without the look-ahead, 75–76% four tiles ahead (1,408 bytes here) and 79–81% eight
        /// (six and twelve within two points of eight); on two threads 78% → 93% → 96% in one run, 67–69% for every
        /// distance in the other.</summary>
        public static int Ahead => 8;

        /// <summary>Two loads, a shift of the nibbles for rows 8–15, a shift of the
        /// fifth bits for most groups, two masks and an or.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Half(byte* tile, int g, int half)
        {
            Vector256<byte> nibbles = Vector256.Load(tile + NibbleOffset + 32 * g);
            Vector256<ushort> high = Vector256.Load((ushort*)(tile + HighOffset + 32 * (g >> 2)));
            int k = 2 * (g & 3) + half; // bit k of a byte of fifth bits belongs to rows 0–7 (k even) or 8–15 (k odd)
            Vector256<byte> codes = half == 0 ? nibbles : Vector256.ShiftRightLogical(nibbles.AsUInt16(), 4).AsByte();
            return (codes & Vector256.Create((byte)0x0F)) | (ToBit4(high, k) & Vector256.Create((byte)0x10));
        }

        /// <summary>Bit <paramref name="k"/> of every byte moved to bit 4 (other bits are masked off after).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<byte> ToBit4(Vector256<ushort> v, int k) => (k switch // literal counts: immediate shifts
        {
            0 => Vector256.ShiftLeft(v, 4),
            1 => Vector256.ShiftLeft(v, 3),
            2 => Vector256.ShiftLeft(v, 2),
            3 => Vector256.ShiftLeft(v, 1),
            4 => v,
            5 => Vector256.ShiftRightLogical(v, 1),
            6 => Vector256.ShiftRightLogical(v, 2),
            _ => Vector256.ShiftRightLogical(v, 3),
        }).AsByte();
    }
}
