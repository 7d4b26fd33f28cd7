using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Kernels.Quant;

/// <summary>The widened FP8 and F16 kernels against their definitions: widening is the format's value times 2⁻¹²⁰ /
/// 2⁻¹¹² exactly; the product is <see cref="Dot"/> over widened codes and scaled activations, bit for bit on every
/// width; the matrix is close to the double-precision product and gives a token the same bits alone or in a batch.</summary>
public class WidenedDotTests
{
    private static byte[] Codes(Random rng, int n) =>
        Enumerable.Range(0, n).Select(_ => { byte c; do c = (byte)rng.Next(256); while ((c & 0x7F) == 0x7F); return c; }).ToArray();

    private static float[] Floats(Random rng, int n, double lo, double hi) =>
        Enumerable.Range(0, n).Select(_ => (float)(lo + rng.NextDouble() * (hi - lo)) * (rng.Next(2) == 0 ? 1 : -1)).ToArray();

    [Fact]
    public void Widening_IsTheE4M3ValueTimes2ToTheMinus120_ForEveryNumberCode()
    {
        for (int code = 0; code < 256; code++)
        {
            if ((code & 0x7F) == 0x7F) continue;
            byte b = (byte)code;
            float widened = Fp8Codes.Widen(ref b, 0);
            Assert.Equal(NumberFormats.F8E4M3ToFloat((byte)code), widened * Fp8Codes.Factor);
            Assert.Equal(BitConverter.SingleToInt32Bits(NumberFormats.F8E4M3ToFloat((byte)code)) < 0, BitConverter.SingleToInt32Bits(widened) < 0);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(17)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(200)]
    [InlineData(257)]
    [InlineData(1408)]
    [InlineData(7168)]
    public void EveryPath_IsDotOverTheWidenedCodes_BitForBit(int n)
    {
        var rng = new Random(n);
        byte[] codes = Codes(rng, n);
        float[] xs = Floats(rng, n, 0, 4);
        float[] widened = Enumerable.Range(0, n).Select(i => Fp8Codes.Widen(ref codes[0], i)).ToArray();
        AssertEveryPathIsDot<Fp8Codes>(codes, widened, xs);
        // F16: every finite half value (random bits, exponent below 31), subnormals included.
        ushort[] halves = Enumerable.Range(0, n).Select(_ => { ushort h; do h = (ushort)rng.Next(65536); while ((h & 0x7C00) == 0x7C00); return h; }).ToArray();
        byte[] f16 = System.Runtime.InteropServices.MemoryMarshal.AsBytes(halves.AsSpan()).ToArray();
        float[] wide16 = Enumerable.Range(0, n).Select(i => F16Codes.Widen(ref f16[0], i)).ToArray();
        AssertEveryPathIsDot<F16Codes>(f16, wide16, xs);
        // BF16: any bits (infinities and NaN widen exactly too).
        byte[] bf16 = System.Runtime.InteropServices.MemoryMarshal.AsBytes(Enumerable.Range(0, n).Select(_ => (ushort)rng.Next(65536)).ToArray().AsSpan()).ToArray();
        float[] wideBf16 = Enumerable.Range(0, n).Select(i => NumberFormats.BF16ToFloat(BitConverter.ToUInt16(bf16, 2 * i))).ToArray();
        AssertEveryPathIsDot<Bf16Codes>(bf16, wideBf16, xs);
    }

    /// <summary>Four tokens at once (AVX-512) and three (AVX2 without it) give each token the bits of
    /// <see cref="WidenedDot{TC}.Compute"/> alone, FP8, F16 and BF16: a scalar tail alone (1), single vectors and a tail
    /// (17), whole blocks of four vectors, and an expert's width.</summary>
    [Theory]
    [InlineData(1, 4)]
    [InlineData(17, 4)]
    [InlineData(64, 4)]
    [InlineData(200, 4)]
    [InlineData(1408, 4)]
    [InlineData(1, 3)]
    [InlineData(17, 3)]
    [InlineData(64, 3)]
    [InlineData(200, 3)]
    [InlineData(1408, 3)]
    public void ComputeMany_GivesEachTokenTheBitsOfComputeAlone(int n, int tokens)
    {
        if (!(tokens == 4 ? WidenedDot<Fp8Codes>.FourAtOnce : WidenedDot<Fp8Codes>.ThreeAtOnce)) return; // this CPU's width only
        var rng = new Random(n + 7);
        int stride = n + 3;
        float[] xs = Floats(rng, (tokens - 1) * stride + n, 0, 4);
        byte[] codes = Codes(rng, n);
        AssertEachTokenAlone<Fp8Codes>(codes, xs, stride, tokens);
        byte[] f16 = System.Runtime.InteropServices.MemoryMarshal.AsBytes(Floats(rng, n, 0, 2).Select(v => (Half)v).ToArray().AsSpan()).ToArray();
        AssertEachTokenAlone<F16Codes>(f16, xs, stride, tokens);
        byte[] bf16 = System.Runtime.InteropServices.MemoryMarshal.AsBytes(Floats(rng, n, 0, 2).Select(NumberFormats.FloatToBF16).ToArray().AsSpan()).ToArray();
        AssertEachTokenAlone<Bf16Codes>(bf16, xs, stride, tokens);
    }

    private static void AssertEachTokenAlone<TC>(byte[] codes, float[] xs, int stride, int tokens) where TC : struct, IWidenedCodes
    {
        int n = codes.Length / TC.Bytes;
        var r = new float[tokens];
        if (tokens == 4) WidenedDot<TC>.Compute4(codes, xs, stride, r);
        else WidenedDot<TC>.Compute3(codes, xs, stride, r);
        for (int k = 0; k < tokens; k++)
            Assert.Equal(BitConverter.SingleToInt32Bits(WidenedDot<TC>.Compute(codes, xs.AsSpan(k * stride, n))), BitConverter.SingleToInt32Bits(r[k]));
    }

    private static void AssertEveryPathIsDot<TC>(byte[] codes, float[] widened, float[] xs) where TC : struct, IWidenedCodes
    {
        Assert.Equal(Dot.Scalar(widened, xs), WidenedDot<TC>.Scalar(codes, xs));
        if (Avx2.IsSupported) Assert.Equal(Dot.V256(widened, xs), WidenedDot<TC>.V256(codes, xs));
        if (Vector128.IsHardwareAccelerated) Assert.Equal(Dot.V128(widened, xs), WidenedDot<TC>.V128(codes, xs));
        if (Avx512F.IsSupported) Assert.Equal(Dot.V512(widened, xs), WidenedDot<TC>.V512(codes, xs));
        Assert.Equal(Dot.Compute(widened, xs), WidenedDot<TC>.Compute(codes, xs));
    }

    [Fact]
    public void F16Widening_IsTheHalfValueTimes2ToTheMinus112_ForEveryFiniteCode()
    {
        for (int h = 0; h < 65536; h++)
        {
            if ((h & 0x7C00) == 0x7C00) continue;
            byte[] b = BitConverter.GetBytes((ushort)h);
            float widened = F16Codes.Widen(ref b[0], 0);
            Assert.Equal((float)BitConverter.UInt16BitsToHalf((ushort)h), widened * F16Codes.Factor);
            Assert.Equal((h & 0x8000) != 0, BitConverter.SingleToInt32Bits(widened) < 0);
        }
    }

    [Fact]
    public void ScaleActivations_MultipliesByTheBlockScaleTimes2To120_AndRefusesOverflow()
    {
        var rng = new Random(2);
        float[] x = Floats(rng, 300, 0, 3);
        float[] scales = [1e-3f, 2e-4f, 5e-2f];
        var xs = new float[300];
        Assert.True(WidenedDot<Fp8Codes>.ScaleActivations(x, scales, 128, xs));
        for (int c = 0; c < 300; c++) Assert.Equal(x[c] * (scales[c / 128] * Fp8Codes.Factor), xs[c]);
        x[280] = 1e4f; // third block: 1e4 · 5e-2 = 500 ≥ 2^8: x · scale · 2^120 overflows
        Assert.False(WidenedDot<Fp8Codes>.ScaleActivations(x, scales, 128, xs));
        Assert.False(WidenedDot<Fp8Codes>.ScaleActivations(x.AsSpan(0, 10).ToArray(), [300f], 128, xs));
    }

    [Fact]
    public void Dequantize_IsBitIdenticalToTheTable_ForEveryCode_WithSubnormalTinyAndLargeScales()
    {
        byte[] codes = Enumerable.Range(0, 520).Select(i => (byte)(i % 256)).ToArray(); // NaN codes included
        foreach (float scale in new[] { 1e-40f, 3e-38f, 1e-4f, 1f, 255.9f, 300f })
        {
            float[] scales = [scale, -scale * 0.5f, scale * 0.25f, scale, scale, scale];
            foreach (int blockCols in new[] { 128, 100 })
            {
                var table = new float[codes.Length];
                NumberFormats.Fp8Row(codes, scales, blockCols, table);
                var widened = new float[codes.Length];
                Fp8Rows.Dequantize(codes, scales, blockCols, widened);
                Assert.Equal(table, widened); // NaN where the code is NaN (xUnit compares NaN equal to NaN)
                Assert.True(float.IsNaN(widened[0x7F]) && float.IsNaN(widened[0xFF]));
            }
        }
    }

    [Fact]
    public void HasNaNCode_FindsEitherNaNCodeAnywhere()
    {
        var rng = new Random(5);
        byte[] codes = Codes(rng, 100);
        Assert.False(Fp8Codes.HasSpecialCode(codes));
        foreach (int at in new[] { 0, 31, 32, 95, 99 })
            foreach (byte nan in new byte[] { 0x7F, 0xFF })
            {
                byte[] c = (byte[])codes.Clone();
                c[at] = nan;
                Assert.True(Fp8Codes.HasSpecialCode(c));
            }
    }

    [Theory]
    [InlineData(200, 384, 0.02f)]
    [InlineData(130, 300, 0.02f)] // blocks cut short in both directions
    [InlineData(64, 256, 300f)]   // scales too large for the widened path: the unwidened sum
    public unsafe void Matrix_IsCloseToTheDoubleProduct_AndATokenGetsTheSameBitsAloneOrInABatch(int rows, int cols, float scale)
    {
        const int tokens = 11; // more than one group of scaled activations
        var rng = new Random(rows + cols);
        byte[] codes = Codes(rng, rows * cols);
        int scaleCols = (cols + 127) / 128;
        float[] scales = Floats(rng, (rows + 127) / 128 * scaleCols, scale * 0.5, scale);
        float[] x = Floats(rng, tokens * cols, 0, 2);
        fixed (byte* p = codes)
        {
            using Matrix m = Matrix.CreateFp8(rows, cols, p, scales, (128, 128), owner: null);
            AssertCloseToDoubleAndBatchInvariant(m, x, tokens,
                (r, c) => (double)NumberFormats.F8E4M3ToFloat(codes[r * cols + c]) * scales[r / 128 * scaleCols + c / 128]);
        }
    }

    /// <summary>Each token's outputs alone equal its outputs in the batch, bit for bit, and lie within 1e-5 of the summed
    /// magnitudes of the double-precision product with the weights' exact values.</summary>
    private static void AssertCloseToDoubleAndBatchInvariant(Matrix m, float[] x, int tokens, Func<int, int, double> weight)
    {
        int rows = m.Rows, cols = m.Cols;
        var batch = new float[tokens * rows];
        m.Forward(x, batch, tokens);
        var alone = new float[rows];
        for (int t = 0; t < tokens; t++)
        {
            m.Forward(x.AsSpan(t * cols, cols), alone, 1);
            Assert.Equal(alone, batch.AsSpan(t * rows, rows).ToArray());
            for (int r = 0; r < rows; r++)
            {
                double exact = 0, magnitude = 0;
                for (int c = 0; c < cols; c++)
                {
                    double term = weight(r, c) * x[t * cols + c];
                    exact += term;
                    magnitude += Math.Abs(term);
                }
                Assert.True(Math.Abs(alone[r] - exact) <= 1e-5 * magnitude, $"row {r} token {t}: {alone[r]} vs {exact}");
            }
        }
    }

    /// <summary>Wide FP8 rows kept in panels give the file layout's bits: one token (the panel kernel, across partial
    /// groups and a last panel with a 64-column step, single vectors and a scalar tail), part of the rows, three tokens
    /// (rows gathered), a row with a NaN code (that row NaN, its group's others unchanged), and every row's values.</summary>
    [Fact]
    public unsafe void PanelMatrix_GivesTheFileLayoutsBits()
    {
        const int rows = 37, cols = 2 * PanelMatrix<Fp8Codes>.Panel + 104; // last panel: one 64-column step, two vectors, eight scalars
        (int, int) block = (32, 128);
        if (!WidedPanels(cols, block)) return;
        var rng = new Random(37);
        byte[] codes = Codes(rng, rows * cols);
        codes[20 * cols + 4100] = 0x7F; // NaN: row 20 computes NaN, the rest of its group as before
        float[] scales = Floats(rng, 2 * ((cols + 127) / 128), 0.001, 0.01);
        float[] x = Floats(rng, 3 * cols, 0, 2);
        fixed (byte* p = codes)
        {
            using Matrix file = Matrix.CreateFp8(rows, cols, p, scales, block, owner: null);
            using Matrix panels = PanelMatrix<Fp8Codes>.From(WeightFormat.FP8, rows, cols, p, scales, block);
            foreach ((int tokens, int start, int count, float[] actual) in SameProducts(file, panels, x, (1, 0, rows), (1, 5, 29), (3, 0, rows), (2, 17, 20)))
            {
                if (start <= 20 && 20 < start + count) Assert.True(float.IsNaN(actual[20 - start]));
                Assert.Equal(tokens * count - (start <= 20 && 20 < start + count ? tokens : 0), actual.Count(float.IsFinite));
            }
            AssertSameRows(file, panels);
        }
    }

    /// <summary>A wide FP8 tensor read from a checkpoint (not memory-mapped) comes back in panels where this CPU keeps
    /// them, with the stored values; memory-mapped, it stays in the file layout.</summary>
    [Fact]
    public void TensorReader_ReadsAWideFp8TensorIntoPanels()
    {
        const int rows = 20, cols = 2 * PanelMatrix<Fp8Codes>.Panel + 64;
        var rng = new Random(5);
        byte[] codes = Codes(rng, rows * cols);
        float[] scales = Floats(rng, (cols + 127) / 128, 0.001, 0.01);
        using var dir = new TempDir();
        SafeTensorsWriter.Write(dir.File("model.safetensors"),
        [
            new SafeTensorsWriter.Entry("w.weight", "F8_E4M3", [rows, cols], codes),
            new SafeTensorsWriter.Entry("w.weight_scale_inv", "F32", [1, (cols + 127) / 128], SafeTensorsWriter.F32(scales)),
        ]);
        using var checkpoint = DeepSeekSharp.Formats.SafeTensors.SafeTensorsCheckpoint.Open(dir.Path);
        var reader = new DeepSeekSharp.Formats.SafeTensors.TensorReader(checkpoint, (128, 128));
        using Matrix read = reader.ReadMatrix("w.weight", rows, cols, "test", WeightFormat.FP8);
        using Matrix mapped = reader.ReadMatrix("w.weight", rows, cols, "test", WeightFormat.FP8, inPlace: true);
        Assert.Equal(WidenedDot<Fp8Codes>.FourAtOnce || Fp8Runs.IsSupported, read is PanelMatrix<Fp8Codes>);
        Assert.Equal(!WidenedDot<Fp8Codes>.FourAtOnce && Fp8Runs.IsSupported, read is PanelMatrix<Fp8Codes> { Runs: true });
        Assert.IsNotType<PanelMatrix<Fp8Codes>>(mapped);
        var a = new float[cols];
        var b = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            read.DequantizeRow(r, a);
            mapped.DequantizeRow(r, b);
            Assert.Equal(b, a);
            Assert.Equal(NumberFormats.F8E4M3ToFloat(codes[r * cols + 4100]) * scales[4100 / 128], a[4100]);
        }
    }

    /// <summary>Both matrices' products for each (tokens, first row, rows) case have the same bits; the second's results.</summary>
    private static List<(int Tokens, int Start, int Count, float[] Y)> SameProducts(Matrix file, Matrix panels, float[] x, params (int Tokens, int Start, int Count)[] cases)
    {
        var results = new List<(int, int, int, float[])>();
        foreach ((int tokens, int start, int count) in cases)
        {
            var expected = new float[tokens * count];
            var actual = new float[tokens * count];
            file.Forward(x.AsSpan(0, tokens * file.Cols), expected, tokens, start, count);
            panels.Forward(x.AsSpan(0, tokens * file.Cols), actual, tokens, start, count);
            Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));
            results.Add((tokens, start, count, actual));
        }
        return results;
    }

    /// <summary>Every row dequantises to the same bits in both matrices.</summary>
    private static void AssertSameRows(Matrix a, Matrix b)
    {
        var ra = new float[a.Cols];
        var rb = new float[b.Cols];
        for (int r = 0; r < a.Rows; r++)
        {
            a.DequantizeRow(r, ra);
            b.DequantizeRow(r, rb);
            Assert.Equal(ra.Select(BitConverter.SingleToInt32Bits), rb.Select(BitConverter.SingleToInt32Bits));
        }
    }

    /// <summary>Whether this CPU keeps FP8 rows in whole runs of 32 in runs (AVX2 without the 512-bit kernels).</summary>
    private static bool InRunsHere => Fp8Runs.IsSupported && !WidenedDot<Fp8Codes>.FourAtOnce;

    /// <summary>Whether this CPU keeps such a matrix in panels (the 512-bit kernel); without it the loader never makes one.</summary>
    private static bool WidedPanels(int cols, (int, int) block)
    {
        bool suits = PanelMatrix<Fp8Codes>.Suits(37, cols, block);
        Assert.Equal(WidenedDot<Fp8Codes>.FourAtOnce, suits);
        Assert.Equal(InRunsHere, PanelMatrix<Fp8Codes>.Suits(37, 2 * PanelMatrix<Fp8Codes>.Panel - 32, block)); // no wider than two panels but not whole runs of 64: the file layout (in runs of 32 with AVX2 alone)
        Assert.False(PanelMatrix<Fp8Codes>.Suits(37, cols, (24, 128))); // a block row boundary inside a group of sixteen
        return suits;
    }

    /// <summary>FP8 rows in whole runs of 64 columns, kept in quads (four rows interleaved by runs of 64 codes) give
    /// the file layout's bits: one token (the quad kernel, across a last partial group and a
    /// block row boundary), part of the rows starting inside a group, three tokens (rows gathered), a row with a NaN
    /// code (that row NaN, the rest of its quad unchanged), and every row's values. Block rows of 8 give runs of two
    /// quads per kernel call, one block for all rows runs of up to nine (the NaN row ends one); 128 columns is absorbed
    /// MLA's per-head width. Wider rows are quad panels (sixteen rows, four quads by panels of 512 columns, each row's
    /// accumulators carried across the panels): the same cases, with groups of sixteen and a last narrower panel.</summary>
    [Theory]
    [InlineData(64, 8)]
    [InlineData(128, 8)]
    [InlineData(128, 128)]
    [InlineData(1408, 8)]
    [InlineData(2048, 8)]
    [InlineData(2048, 128)]
    [InlineData(4096, 8)]
    [InlineData(4288, 16)]  // quad panels: eight panels of 512 and one of 192
    [InlineData(4288, 32)]  // runs of two groups
    [InlineData(7168, 128)] // V3's hidden size: fourteen whole panels, one block for all rows
    public unsafe void Quads_GiveTheFileLayoutsBits(int cols, int blockRows)
    {
        const int rows = 39; // a last quad of three rows
        (int, int) block = (blockRows, 128);
        Assert.Equal(WidenedDot<Fp8Codes>.FourAtOnce || InRunsHere, PanelMatrix<Fp8Codes>.Suits(rows, cols, block));
        Assert.Equal(InRunsHere, PanelMatrix<Fp8Codes>.Suits(rows, cols, (6, 128))); // a block row boundary inside a quad (runs take any)
        if (!WidenedDot<Fp8Codes>.FourAtOnce) return;
        var rng = new Random(cols);
        byte[] codes = Codes(rng, rows * cols);
        codes[21 * cols + cols / 2] = 0xFF; // NaN: row 21 computes NaN, rows 20, 22 and 23 as before
        float[] scales = Floats(rng, (rows + blockRows - 1) / blockRows * ((cols + 127) / 128), 0.001, 0.01);
        float[] x = Floats(rng, 3 * cols, 0, 2);
        fixed (byte* p = codes)
        {
            using Matrix file = Matrix.CreateFp8(rows, cols, p, scales, block, owner: null);
            using var quads = PanelMatrix<Fp8Codes>.From(WeightFormat.FP8, rows, cols, p, scales, block);
            Assert.True(quads.Quads);
            foreach ((int tokens, int start, int count, float[] actual) in SameProducts(file, quads, x, (1, 0, rows), (1, 5, 29), (1, 36, 3), (3, 0, rows), (2, 17, 20)))
            {
                if (start <= 21 && 21 < start + count) Assert.True(float.IsNaN(actual[21 - start]));
                Assert.Equal(tokens * count - (start <= 21 && 21 < start + count ? tokens : 0), actual.Count(float.IsFinite));
            }
            AssertSameRows(file, quads);
        }
    }

    /// <summary>The runs kernel against the 256-bit file-layout kernel over the same codes: every code (all 254 numbers,
    /// subnormals and both zeros among them), whole runs from one to 65, activations from 2⁻¹⁴⁰ (subnormal products) to
    /// 2¹⁰⁰, bit for bit, one token alone, two at once and three; <see cref="Fp8Runs.Restore"/> undoes
    /// <see cref="Fp8Runs.Arrange"/>, which puts code 8k + j at byte 4j + k of each run.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(44)]
    [InlineData(64)]
    [InlineData(65)]
    public unsafe void Runs_AreTheFileLayoutKernelsBits(int runs)
    {
        if (!Fp8Runs.IsSupported) return;
        int n = runs * Fp8Runs.Run;
        var rng = new Random(runs);
        byte[] codes = Codes(rng, n);
        for (int i = 0; i < Math.Min(n, 254); i++) codes[i] = (byte)(i < 127 ? i : i + 1); // every number code once
        byte[] arranged = new byte[n], restored = new byte[n];
        Fp8Runs.Arrange(codes, arranged);
        Assert.Equal(codes[8 * 2 + 5], arranged[4 * 5 + 2]);
        Assert.Equal(codes[n - Fp8Runs.Run + 8 * 3 + 7], arranged[n - Fp8Runs.Run + 4 * 7 + 3]);
        Fp8Runs.Restore(arranged, restored);
        Assert.Equal(codes, restored);
        foreach (double scale in new[] { 1.0, Math.Pow(2, -140), Math.Pow(2, 100) })
        {
            float[] xs = Floats(rng, n, 0, scale);
            float expected = WidenedDot<Fp8Codes>.V256(codes, xs);
            float[] other = Floats(rng, n, 0, 1);
            float[] two = new float[2];
            fixed (byte* pa = arranged)
            fixed (float* px = xs, po = other, py = two)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(Fp8Runs.Compute(pa, n, px)));
                Fp8Runs.Compute2(pa, n, po, px, py); // two tokens at once: each its own bits
                Assert.Equal(BitConverter.SingleToInt32Bits(WidenedDot<Fp8Codes>.V256(codes, other)), BitConverter.SingleToInt32Bits(two[0]));
                Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(two[1]));
                float[] third = Floats(rng, n, 0, scale), three = new float[3];
                fixed (float* pt = third, p3 = three)
                    Fp8Runs.Compute3(pa, n, px, pt, po, p3); // three at once: each its own bits
                Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(three[0]));
                Assert.Equal(BitConverter.SingleToInt32Bits(WidenedDot<Fp8Codes>.V256(codes, third)), BitConverter.SingleToInt32Bits(three[1]));
                Assert.Equal(BitConverter.SingleToInt32Bits(WidenedDot<Fp8Codes>.V256(codes, other)), BitConverter.SingleToInt32Bits(three[2]));
            }
        }
    }

    /// <summary>FP8 rows kept in runs give the file layout's bits: one token over all rows and part of them, three,
    /// five and eleven tokens (threes, pairs and singles: of eleven, 0 and 1 alone, then threes 2–4 and 5–7 in the first
    /// group of eight scaled at once and 8–10 in the second), across block rows of 8; a
    /// row with a NaN code (that row NaN, the rest unchanged); a token whose scaled activations overflow (the unwidened
    /// sum, the same as the file layout's, its pair partner alone); and every row's values. 32 and 96 columns: one run and three, 128 absorbed MLA's per-head width,
    /// 1,408 and 2,080 V2-Lite's expert and a row with an odd number of runs. Where the file layout's products take the
    /// 512-bit kernel (its sixteen-lane accumulators, other bits than the runs' eight-lane ones) there is nothing to
    /// compare with; .ci/run's pass with AVX-512 off runs it on such CPUs.</summary>
    [Theory]
    [InlineData(32)]
    [InlineData(96)]
    [InlineData(128)]
    [InlineData(1408)]
    [InlineData(2080)]
    public unsafe void RunsMatrix_GivesTheFileLayoutsBits(int cols)
    {
        if (!Fp8Runs.IsSupported || WidenedDot<Fp8Codes>.FourAtOnce) return;
        const int rows = 37;
        (int, int) block = (8, 128);
        var rng = new Random(cols);
        byte[] codes = Codes(rng, rows * cols);
        codes[21 * cols + cols / 2] = 0xFF; // NaN: row 21 computes NaN
        float[] scales = Floats(rng, (rows + 7) / 8 * ((cols + 127) / 128), 0.001, 0.01);
        float[] x = Floats(rng, 11 * cols, 0, 2);
        x[1 * cols + cols / 3] = 3e38f; // token 1 overflows once scaled by 2^120: its products are taken unwidened, token 0 alone beside it
        fixed (byte* p = codes)
        {
            using Matrix file = Matrix.CreateFp8(rows, cols, p, scales, block, owner: null);
            using var runs = PanelMatrix<Fp8Codes>.From(WeightFormat.FP8, rows, cols, p, scales, block, runs: true);
            Assert.True(runs.Runs);
            foreach ((int tokens, int start, int count, float[] actual) in SameProducts(file, runs, x, (1, 0, rows), (1, 5, 29), (3, 0, rows), (5, 2, 33), (11, 17, 20)))
            {
                if (start <= 21 && 21 < start + count) Assert.True(float.IsNaN(actual[21 - start]));
                if (tokens == 1) Assert.Equal(count - (start <= 21 && 21 < start + count ? 1 : 0), actual.Count(float.IsFinite));
            }
            AssertSameRows(file, runs);
        }
    }

    /// <summary>Absorbed MLA's W_UK from an FP8 kv_b_proj: each head's k_nope rows transposed, kept as FP8 (codes moved,
    /// block scales swapped), hold exactly kv_b's values; a head part that is not whole 128-row blocks gives null (the
    /// caller then makes a float32 copy).</summary>
    [Fact]
    public unsafe void TransposeHeadParts_HoldsEachHeadsPartTransposed_ValueForValue()
    {
        const int heads = 3, nope = 128, v = 128, rank = 256, headRows = nope + v;
        var rng = new Random(21);
        byte[] codes = Codes(rng, heads * headRows * rank);
        codes[(1 * headRows + 5) * rank + 200] = 0xFF; // a NaN code in head 1's part: it moves with the rest
        float[] scales = Floats(rng, heads * headRows / 128 * (rank / 128), 0.001, 0.01);
        fixed (byte* p = codes)
        {
            using var kvB = (WidenedMatrix<Fp8Codes>)Matrix.CreateFp8(heads * headRows, rank, p, scales, (128, 128), owner: null);
            using Matrix wkT = kvB.TransposeHeadParts(heads, headRows, nope)!;
            Assert.Equal(WeightFormat.FP8, wkT.Format);
            Assert.Equal((heads * rank, nope), (wkT.Rows, wkT.Cols));
            Assert.Equal((long)heads * rank * nope, wkT.Bytes);
            var source = new float[rank];
            var row = new float[nope];
            for (int h = 0; h < heads; h++)
                for (int c = 0; c < rank; c++)
                {
                    wkT.DequantizeRow(h * rank + c, row);
                    for (int d = 0; d < nope; d++)
                    {
                        kvB.DequantizeRow(h * headRows + d, source);
                        Assert.Equal(BitConverter.SingleToInt32Bits(source[c]), BitConverter.SingleToInt32Bits(row[d]));
                    }
                }
            Assert.Null(kvB.TransposeHeadParts(heads, headRows, 32));   // a part of a quarter block
            Assert.Null(kvB.TransposeHeadParts(2 * heads, 128, 64));    // heads of 128 rows, a part of half a block
            Assert.Null(kvB.TransposeHeadParts(heads + 1, headRows, nope)); // heads that do not fill the rows
        }
    }

    [Fact]
    public unsafe void Matrix_RowWithANaNCode_GivesNaN_OthersNumbers()
    {
        var rng = new Random(8);
        byte[] codes = Codes(rng, 4 * 256);
        codes[2 * 256 + 17] = 0xFF;
        float[] x = Floats(rng, 256, 0, 1);
        var y = new float[4];
        fixed (byte* p = codes)
        {
            using Matrix m = Matrix.CreateFp8(4, 256, p, [0.01f, 0.01f], (128, 128), owner: null);
            for (int pass = 0; pass < 2; pass++) // the row is found on first use and remembered
            {
                m.Forward(x, y, 1);
                Assert.True(float.IsNaN(y[2]));
                Assert.All(new[] { y[0], y[1], y[3] }, v => Assert.True(float.IsFinite(v)));
            }
        }
    }

    [Theory]
    [InlineData(200, 300, 1f)]
    [InlineData(33, 130, 1e5f)] // activations of 2^16 and more overflow the widened path: the unwidened sum
    public void F16Matrix_IsCloseToTheDoubleProduct_AndATokenGetsTheSameBitsAloneOrInABatch(int rows, int cols, float xScale)
    {
        const int tokens = 11;
        var rng = new Random(rows);
        float[] w = Floats(rng, rows * cols, 0, 1.5);
        w[5] = 3e-6f; // a half subnormal
        float[] x = Floats(rng, tokens * cols, 0, xScale);
        using Matrix m = Matrix.FromValues(rows, cols, w, WeightFormat.F16);
        Assert.Equal(WeightFormat.F16, m.Format);
        var values = new float[rows * cols];
        for (int r = 0; r < rows; r++) m.DequantizeRow(r, values.AsSpan(r * cols, cols));
        AssertCloseToDoubleAndBatchInvariant(m, x, tokens, (r, c) => values[r * cols + c]);
    }

    [Fact]
    public void F16Matrix_RowsWithInfinityOrNaN_GetIeeeResults()
    {
        float[] w = new float[3 * 40];
        for (int i = 0; i < w.Length; i++) w[i] = 0.25f;
        w[40 + 7] = float.PositiveInfinity;
        w[80 + 39] = float.NaN;
        float[] x = Enumerable.Repeat(1f, 40).ToArray();
        using Matrix m = Matrix.FromValues(3, 40, w, WeightFormat.F16);
        var y = new float[3];
        m.Forward(x, y, 1);
        Assert.Equal(10f, y[0]);
        Assert.Equal(float.PositiveInfinity, y[1]);
        Assert.True(float.IsNaN(y[2]));
        // Rows set after use are looked at again: row 0 now holds an infinity, row 1 none.
        m.SetRow(0, Enumerable.Repeat(float.NegativeInfinity, 40).ToArray());
        m.SetRow(1, Enumerable.Repeat(0.5f, 40).ToArray());
        m.Forward(x, y, 1);
        Assert.Equal(float.NegativeInfinity, y[0]);
        Assert.Equal(20f, y[1]);
        byte[] special = BitConverter.GetBytes((ushort)0xFC00); // -infinity
        Assert.True(F16Codes.HasSpecialCode(new byte[64].Concat(special).ToArray()));
        Assert.False(F16Codes.HasSpecialCode(BitConverter.GetBytes((ushort)0x7BFF))); // 65504, the largest finite
    }

    /// <summary>BF16 and F16 rows wider than 4,096 columns in whole runs of 64 are kept in quad panels, other rows wider
    /// than four panels in sixteen-row panels (where this CPU has the kernel), and give the file layout's bits: one
    /// token across a partial last group and a last panel (with single vectors and a scalar tail where not whole runs),
    /// part of the rows, several tokens (rows gathered), rows set after use (F16 infinity: that row infinite),
    /// and every row's values.</summary>
    [Theory]
    [InlineData(WeightFormat.BF16, 4 * 2048 + 88)] // sixteen-row panels, the last one: one 64-column step, one vector, eight scalars
    [InlineData(WeightFormat.F16, 4 * 2048 + 88)]
    [InlineData(WeightFormat.BF16, 7168)]          // V3's width, in whole runs of 64: quad panels
    [InlineData(WeightFormat.F16, 7168)]
    public void WideBf16AndF16_InPanels_GiveTheFileLayoutsBits(WeightFormat format, int cols)
    {
        const int rows = 45;
        var rng = new Random(45);
        float[] w = Floats(rng, rows * cols, 0, 1.5);
        float[] x = Floats(rng, 5 * cols, 0, 2);
        using Matrix file = Matrix.FromValues(rows, cols, w, format, tiles: false);
        using Matrix panels = Matrix.FromValues(rows, cols, w, format);
        bool kept = format == WeightFormat.BF16 ? WidenedDot<Bf16Codes>.FourAtOnce : WidenedDot<F16Codes>.FourAtOnce;
        Assert.Equal(kept, panels is PanelMatrix<Bf16Codes> or PanelMatrix<F16Codes>);
        Assert.Equal(kept && cols % 64 == 0, panels is PanelMatrix<Bf16Codes> { Quads: true } or PanelMatrix<F16Codes> { Quads: true });
        Assert.False(Matrix.FromValues(rows, 4096, w.AsSpan(0, rows * 4096), format) is PanelMatrix<Bf16Codes> or PanelMatrix<F16Codes>); // 4,096 wide: the file layout
        void Same() => SameProducts(file, panels, x, (1, 0, rows), (1, 7, 30), (5, 0, rows), (2, 33, 12));
        Same();
        AssertSameRows(file, panels);
        float[] changed = Floats(rng, cols, 0, 1);
        changed[cols - 3] = float.PositiveInfinity; // the last panel's scalar tail
        file.SetRow(40, changed);
        panels.SetRow(40, changed);
        Same();
        var y = new float[rows];
        panels.Forward(x.AsSpan(0, cols), y, 1);
        Assert.True(float.IsInfinity(y[40]) || float.IsNaN(y[40]));
        Assert.Equal(rows - 1, y.Count(float.IsFinite));
    }

    /// <summary>BF16 products are <see cref="Dot"/> over the bfloat16 values, bit for bit, one token or many.</summary>
    [Fact]
    public void Bf16Matrix_IsDotOverTheValues_AloneOrInABatch()
    {
        const int rows = 21, cols = 300, tokens = 6;
        var rng = new Random(21);
        float[] w = Floats(rng, rows * cols, 0, 1);
        float[] x = Floats(rng, tokens * cols, 0, 3);
        using Matrix m = Matrix.FromValues(rows, cols, w, WeightFormat.BF16);
        var values = new float[cols];
        var y = new float[tokens * rows];
        m.Forward(x, y, tokens);
        for (int r = 0; r < rows; r++)
        {
            m.DequantizeRow(r, values);
            for (int c = 0; c < cols; c++) Assert.Equal(NumberFormats.BF16ToFloat(NumberFormats.FloatToBF16(w[r * cols + c])), values[c]);
            for (int t = 0; t < tokens; t++)
                Assert.Equal(BitConverter.SingleToInt32Bits(Dot.Compute(values, x.AsSpan(t * cols, cols))), BitConverter.SingleToInt32Bits(y[t * rows + r]));
        }
    }

    /// <summary>The scratch the widened kernels read their activations from starts on a 64-byte boundary (a split
    /// 512-bit load costs the FP8 kernel a quarter of its speed), and BF16 gives the same bits whether its activations
    /// lie on such a boundary (read in place) or not (copied there first), one token or several, file layout or panels.</summary>
    [Fact]
    public unsafe void Activations_AreReadFromA64ByteBoundary_AndBf16GivesTheSameBitsWhereverTheyLie()
    {
        foreach (int n in new[] { 1, 100, 2048, 40_000 })
            fixed (float* p = LinearScratch.Row(n)) Assert.Equal(0, (nint)p % 64);
        foreach (int cols in new[] { 200, 4 * PanelMatrix<Bf16Codes>.Panel + 64 })
        {
            const int rows = 19, tokens = 5;
            var rng = new Random(cols);
            using Matrix m = Matrix.FromValues(rows, cols, Floats(rng, rows * cols, 0, 1), WeightFormat.BF16);
            float[] x = Floats(rng, tokens * cols, 0, 2);
            using var buffer = new NativeBuffer((tokens * cols + 16) * sizeof(float), weights: false);
            float[] Product(int offset, int t)
            {
                var at = new Span<float>((float*)buffer.Pointer + offset, t * cols);
                x.AsSpan(0, t * cols).CopyTo(at);
                var y = new float[t * rows];
                m.Forward(at, y, t);
                return y;
            }
            float[] expected = Product(0, tokens); // read in place
            foreach (int offset in new[] { 0, 1, 4, 15 }) // floats past a 64-byte boundary
                foreach (int t in new[] { 1, tokens })
                    Assert.Equal(expected.Take(t * rows).Select(BitConverter.SingleToInt32Bits), Product(offset, t).Select(BitConverter.SingleToInt32Bits));
        }
    }
}
