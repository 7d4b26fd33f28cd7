using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Linear;

/// <summary>The panel kernels' loop over rows [r0, r1) of a prompt-sized product: up to 256 KB of 16-row panels are
/// unpacked at once, then tokens pass over them in chunks of about 192 KB of activations, so both stay in L2 (one
/// panel over all of a long prompt streamed the activations from L3: -30%).</summary>
internal static unsafe class PanelProduct
{
    public const int PanelRows = 16;

    public static void Run<TK>(byte* data, long rowBytes, int cols, QuantizedActivations a, float* y, int n, int r0, int r1, int rowStart, int rowCount)
        where TK : IPanelKernel
    {
        int shorts = TK.PanelShorts(cols), floats = TK.ScaleFloats(cols);
        int group = Math.Clamp((256 << 10) / (shorts * 2), 1, (r1 - r0 + PanelRows - 1) / PanelRows);
        int chunk = Math.Max(6, (192 << 10) / (cols * 2) / 6 * 6);
        Span<short> panels = GemmScratch.Panel(shorts * group);
        Span<float> scales = GemmScratch.Scales(floats * group), partials = GemmScratch.Partials;
        for (int p0 = r0; p0 < r1; p0 += PanelRows * group)
        {
            int count = Math.Min(group, (r1 - p0 + PanelRows - 1) / PanelRows);
            for (int i = 0; i < count; i++)
            {
                TK.Pack(ref *(data + (p0 + i * PanelRows) * rowBytes), rowBytes, Math.Min(PanelRows, r1 - p0 - i * PanelRows), cols,
                    panels.Slice(i * shorts, shorts), scales.Slice(i * floats, floats));
            }
            for (int t0 = 0; t0 < n; t0 += chunk)
            {
                int tn = Math.Min(chunk, n - t0);
                for (int i = 0; i < count; i++)
                {
                    TK.Multiply(panels.Slice(i * shorts, shorts), scales.Slice(i * floats, floats), cols, Math.Min(PanelRows, r1 - p0 - i * PanelRows),
                        a, t0, tn, partials, y + (long)t0 * rowCount + (p0 + i * PanelRows - rowStart), rowCount);
                }
            }
        }
    }
}

/// <summary>A panel kernel as <see cref="PanelProduct"/> drives it (see <see cref="BlockGemm{T}"/>).</summary>
internal interface IPanelKernel
{
    static abstract int PanelShorts(int cols);
    static abstract int ScaleFloats(int cols);
    static abstract void Pack(ref byte w, long rowBytes, int rows, int cols, Span<short> panel, Span<float> scales);
    static abstract unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int cols, int rows,
        QuantizedActivations a, int t0, int n, Span<float> partials, float* y, long yStride);
}

internal readonly struct BlockPanels<T> : IPanelKernel where T : struct, IBlockCodes
{
    public static int PanelShorts(int cols) => BlockGemm<T>.PanelShorts(cols / 32);
    public static int ScaleFloats(int cols) => cols / 32 * 16;
    public static void Pack(ref byte w, long rowBytes, int rows, int cols, Span<short> panel, Span<float> scales) =>
        BlockGemm<T>.Pack(ref w, rowBytes, rows, cols / 32, panel, scales);
    public static unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int cols, int rows,
        QuantizedActivations a, int t0, int n, Span<float> partials, float* y, long yStride)
    {
        int blocks = cols / 32;
        if (AvxVnni.IsSupported)
        {
            if (panel.Length * 2 < blocks * ByteTiles.BlockBytes) ThrowHelper.TooShort(nameof(panel), blocks * ByteTiles.BlockBytes, panel.Length * 2);
            fixed (short* tiles = panel)
                BlockGemm<T>.MultiplyBytes((byte*)tiles, blocks, rows, a.Q.AsSpan(t0 * cols), a.D.AsSpan(t0 * blocks),
                    a.BlockSum.AsSpan(t0 * blocks), n, partials, y, yStride);
        }
        else
            BlockGemm<T>.Multiply(panel, scales, blocks, rows, a.Q16.AsSpan(t0 * cols), a.D.AsSpan(t0 * blocks), n, partials, y, yStride);
    }
}

internal readonly struct Q4KPanels : IPanelKernel
{
    public static int PanelShorts(int cols) => cols / 256 * Q4KGemm.ShortsPerSuperBlock;
    public static int ScaleFloats(int cols) => cols / 256 * 32;
    public static void Pack(ref byte w, long rowBytes, int rows, int cols, Span<short> panel, Span<float> scales) =>
        Q4KGemm.Pack(ref w, rowBytes, rows, cols / 256, panel, scales);
    public static unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int cols, int rows,
        QuantizedActivations a, int t0, int n, Span<float> partials, float* y, long yStride) =>
        Q4KGemm.Multiply(panel, scales, cols / 256, rows, a.Q16.AsSpan(t0 * cols), a.D.AsSpan(t0 * (cols / 256)),
            a.BlockSum.AsSpan(t0 * (cols / 32)), n, partials, y, yStride);
}

/// <summary>Byte tiles (<see cref="ByteTiles"/>) of <typeparamref name="TTile"/> as the int16 panels of
/// <see cref="BlockPanels{T}"/>, where the CPU has AVX-512 but no VNNI: only the packing differs. A group of tiles holds
/// a file row's bytes for each of its rows, so the group of rows r..r+15 starts at r · RowBytes and
/// <see cref="PanelProduct"/> finds it there.</summary>
internal readonly struct TilePanels<TBlock, TTile> : IPanelKernel where TBlock : struct, IBlockCodes where TTile : struct, IByteTileCodes
{
    public static int PanelShorts(int cols) => BlockPanels<TBlock>.PanelShorts(cols);
    public static int ScaleFloats(int cols) => BlockPanels<TBlock>.ScaleFloats(cols);
    public static unsafe void Pack(ref byte w, long rowBytes, int rows, int cols, Span<short> panel, Span<float> scales) =>
        ByteTiles.PackShorts<TTile>((byte*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref w), cols / 32, panel, scales);
    public static unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int cols, int rows,
        QuantizedActivations a, int t0, int n, Span<float> partials, float* y, long yStride) =>
        BlockPanels<TBlock>.Multiply(panel, scales, cols, rows, a, t0, n, partials, y, yStride);
}
