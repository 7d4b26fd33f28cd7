using DeepSeekSharp.Linear;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Kernels.Quant;

/// <summary>Every GGUF block type: sizes, quantise → dequantise error on ggml's own test data and bounds
/// (tests/test-quantize-fns.cpp), hand-made blocks decoding to hand-computed values, and the Q6_K kernel against its
/// scalar specification.</summary>
public class GgmlBlockTests
{
    public static TheoryData<GgmlType, int, int> Geometry => new()
    {
        { GgmlType.Q4_0, 32, 18 }, { GgmlType.Q4_1, 32, 20 }, { GgmlType.Q5_0, 32, 22 }, { GgmlType.Q5_1, 32, 24 },
        { GgmlType.Q8_0, 32, 34 }, { GgmlType.Q2_K, 256, 84 }, { GgmlType.Q3_K, 256, 110 }, { GgmlType.Q4_K, 256, 144 },
        { GgmlType.Q5_K, 256, 176 }, { GgmlType.Q6_K, 256, 210 }, { GgmlType.IQ4_NL, 32, 18 }, { GgmlType.IQ4_XS, 256, 136 }, { GgmlType.BF16, 1, 2 }, { GgmlType.F16, 1, 2 }, { GgmlType.F32, 1, 4 },
    };

    [Theory]
    [MemberData(nameof(Geometry))]
    public void BlockGeometry_MatchesGgml(GgmlType t, int blockSize, int typeSize)
    {
        Assert.Equal(blockSize, t.Traits().BlockSize);
        Assert.Equal(typeSize, t.Traits().BlockBytes);
    }

    [Fact]
    public void Q6KStruct_Is210Bytes() => Assert.Equal(210, Unsafe.SizeOf<BlockQ6K>());

    [Theory]
    [InlineData(GgmlType.IQ2_XXS)]
    [InlineData(GgmlType.TQ1_0)]
    [InlineData(GgmlType.IQ3_S)]
    public void OtherTypes_AreRefusedNamingTheTypeAndTheSupportedOnes(GgmlType t)
    {
        var e = Assert.Throws<NotSupportedException>(() => GgmlBlocks.Unsupported(t, "blk.0.ffn_up.weight").Throw());
        Assert.Contains(t.ToString(), e.Message);
        Assert.Contains("blk.0.ffn_up.weight", e.Message);
        Assert.Contains("Q6_K", e.Message);
    }

    // ggml's test data and metric: 0.1 + 2·cos(i + offset), error = sqrt(Σ diff²) / n over 32·128 values.
    private const int TestSize = 32 * 128;

    private static float[] GgmlTestData(float offset = 0) =>
        Enumerable.Range(0, TestSize).Select(i => 0.1f + 2 * MathF.Cos(i + offset)).ToArray();

    private static double GgmlError(float[] a, float[] b) => Math.Sqrt(a.Zip(b).Sum(p => (double)(p.First - p.Second) * (p.First - p.Second))) / a.Length;

    private static float[] RoundTrip(GgmlType t, float[] x)
    {
        var bytes = new byte[t.Traits().RowBytes(x.Length)];
        t.Traits().Quantize(x, bytes);
        var back = new float[x.Length];
        t.Traits().Dequantize(bytes, back);
        return back;
    }

    // ggml: MAX_QUANTIZATION_TOTAL_ERROR 0.002, _3BITS 0.004, _2BITS 0.0075.
    [Theory]
    [InlineData(GgmlType.Q4_0, 0.002)]
    [InlineData(GgmlType.Q4_1, 0.002)]
    [InlineData(GgmlType.Q5_0, 0.002)]
    [InlineData(GgmlType.Q5_1, 0.002)]
    [InlineData(GgmlType.Q8_0, 0.002)]
    [InlineData(GgmlType.Q4_K, 0.002)]
    [InlineData(GgmlType.Q5_K, 0.002)]
    [InlineData(GgmlType.Q6_K, 0.002)]
    [InlineData(GgmlType.IQ4_NL, 0.002)]
    [InlineData(GgmlType.IQ4_XS, 0.002)]
    [InlineData(GgmlType.Q3_K, 0.004)]
    [InlineData(GgmlType.Q2_K, 0.0075)]
    [InlineData(GgmlType.F16, 0.002)]
    [InlineData(GgmlType.BF16, 0.002)]
    public void RoundTrip_OnGgmlTestData_WithinGgmlBound(GgmlType t, double bound)
    {
        float[] x = GgmlTestData();
        double err = GgmlError(x, RoundTrip(t, x));
        Assert.True(err < bound, $"{t}: error {err} ≥ {bound}");
    }

    // On uniform random data in [-1, 1] the plain RMSE is bounded by the step each format's bits allow:
    // ≈ range / (2^bits − 1) / √12, with slack for the block scale's own rounding.
    [Theory]
    [InlineData(GgmlType.Q8_0, 0.005)]
    [InlineData(GgmlType.Q6_K, 0.012)]
    [InlineData(GgmlType.Q5_0, 0.025)]
    [InlineData(GgmlType.Q5_1, 0.02)]
    [InlineData(GgmlType.Q5_K, 0.02)]
    [InlineData(GgmlType.Q4_0, 0.05)]
    [InlineData(GgmlType.Q4_1, 0.045)]
    [InlineData(GgmlType.Q4_K, 0.035)]
    [InlineData(GgmlType.IQ4_NL, 0.05)]
    [InlineData(GgmlType.IQ4_XS, 0.05)]
    [InlineData(GgmlType.Q3_K, 0.1)]
    [InlineData(GgmlType.Q2_K, 0.2)]
    public void RoundTrip_OnRandomData_RmseWithinBitBudget(GgmlType t, double bound)
    {
        var rng = new Random((int)t);
        float[] x = Enumerable.Range(0, TestSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] back = RoundTrip(t, x);
        double rmse = Math.Sqrt(x.Zip(back).Average(p => (double)(p.First - p.Second) * (p.First - p.Second)));
        Assert.True(rmse < bound, $"{t}: rmse {rmse} ≥ {bound}");
    }

    [Fact]
    public void RoundTrip_OfZeros_IsZeros()
    {
        foreach (GgmlType t in GgmlBlocks.Supported)
            Assert.All(RoundTrip(t, new float[256]), v => Assert.Equal(0f, v));
    }

    // Hand-made blocks, decoded by the formulas in ggml-quants.c.
    [Fact]
    public void Q4_0_HandMadeBlock()
    {
        var blk = new byte[18];
        BitConverter.TryWriteBytes(blk.AsSpan(0), BitConverter.HalfToUInt16Bits((Half)0.5f));
        blk[2] = 0x3A; // weight 0: 0xA - 8 = 2; weight 16: 3 - 8 = -5
        var y = new float[32];
        GgmlType.Q4_0.Traits().Dequantize(blk, y);
        Assert.Equal(1f, y[0]);
        Assert.Equal(-2.5f, y[16]);
        Assert.Equal(-4f, y[1]); // code 0
    }

    [Fact]
    public void Q5_0_HandMadeBlock_UsesTheHighBitMask()
    {
        var blk = new byte[22];
        BitConverter.TryWriteBytes(blk.AsSpan(0), BitConverter.HalfToUInt16Bits((Half)1f));
        BitConverter.TryWriteBytes(blk.AsSpan(2), (1u << 3) | (1u << 19)); // fifth bit of weights 3 and 19
        blk[6 + 3] = 0x21; // weight 3: low 1 | 16 → 17 - 16 = 1; weight 19: low 2 | 16 → 18 - 16 = 2
        var y = new float[32];
        GgmlType.Q5_0.Traits().Dequantize(blk, y);
        Assert.Equal(1f, y[3]);
        Assert.Equal(2f, y[19]);
        Assert.Equal(-16f, y[0]);
    }

    [Fact]
    public void Q6K_HandMadeBlock()
    {
        var blk = new BlockQ6K { D = BitConverter.HalfToUInt16Bits((Half)0.25f) };
        blk.Sc[0] = 2;   // weights 0..15
        blk.Sc[6] = -3;  // weights 96..111
        blk.Ql[0] = 0x5F; // weight 0 low nibble F, weight 64 low nibble 5
        blk.Qh[0] = 0b10_00_00_10; // weight 0 high bits 2 → q = 0x2F = 47; weight 96 high bits 2
        blk.Ql[32] = 0x70; // weight 96 low nibble 7 → q = 0x27 = 39
        var y = new float[256];
        Q6K.DequantizeRow([blk], y);
        Assert.Equal(0.25f * 2 * (47 - 32), y[0]);
        Assert.Equal(0.25f * -3 * (39 - 32), y[96]);
    }

    [Fact]
    public void Iq4_HandMadeBlocks_PickTheNonLinearLevels()
    {
        var nl = new byte[18];
        BitConverter.TryWriteBytes(nl.AsSpan(0), BitConverter.HalfToUInt16Bits((Half)0.5f));
        nl[2 + 4] = 0xF0; // weight 4: level 0 = -127; weight 20: level 15 = 113
        var y = new float[32];
        GgmlType.IQ4_NL.Traits().Dequantize(nl, y);
        Assert.Equal(0.5f * -127, y[4]);
        Assert.Equal(0.5f * 113, y[20]);

        var xs = new byte[136];
        BitConverter.TryWriteBytes(xs.AsSpan(0), BitConverter.HalfToUInt16Bits((Half)2f));
        // sub-block 3 scale 45 = 0b10_1101: low nibble 0xD in byte 4 + 1 (high nibble), high bits 2 at bits 6-7
        xs[4 + 1] = 0xD0;
        BitConverter.TryWriteBytes(xs.AsSpan(2), (ushort)(2 << 6));
        xs[8 + 3 * 16 + 5] = 0x08; // weight 3·32 + 5: level 8 = 1
        var z = new float[256];
        GgmlType.IQ4_XS.Traits().Dequantize(xs, z);
        Assert.Equal(2f * (45 - 32) * 1, z[3 * 32 + 5]);
        Assert.Equal(2f * (0 - 32) * -127, z[0]); // sub-block 0: stored scale 0 → −32, code 0 → −127
    }

    [Fact]
    public void Q3K_HandMadeBlock_SixBitScalesAndHighMask()
    {
        var blk = new byte[110];
        BitConverter.TryWriteBytes(blk.AsSpan(108), BitConverter.HalfToUInt16Bits((Half)1f));
        // scale 9 (weights 144..159) stored as 9 + 32 = 41 = 0b10_1001: low nibble in byte 96 + 1 (high half), high bits in byte 96+8+1 bits 4-5
        blk[96 + 1] = 0x90;
        blk[96 + 8 + 1] = 0b10 << 4;
        // weight 144: half 1, j 0, l 16 → codes byte 32 + 32 + 16 bits 0-1; high mask byte 16 bit 4
        blk[32 + 32 + 16] = 0b11;
        blk[16] = 1 << 4;
        var y = new float[256];
        GgmlType.Q3_K.Traits().Dequantize(blk, y);
        Assert.Equal(9f * 3, y[144]);
        Assert.Equal(9f * -4, y[145]); // code 0 without the high bit: 0 − 4
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(8)]
    public void Q6K_TwoTokenKernel_IsBitIdenticalToTheSpecificationPerToken(int superBlocks)
    {
        var rng = new Random(superBlocks + 700);
        int n = superBlocks * 256;
        float[] w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] x = Enumerable.Range(0, 3 * n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        w[5] = 0; // a block with a zero
        var wb = new BlockQ6K[superBlocks];
        Q6K.QuantizeRow(w, wb);
        var act = new QuantizedActivations();
        act.QuantizeK(x, 3, n);
        if (!Avx2.IsSupported) return;
        act.PrepareSums16(3);
        var two = new float[2];
        Q6K.V256x2(wb, act.Q.AsSpan(n, 2 * n), n, act.D.AsSpan(superBlocks, 2 * superBlocks), superBlocks, act.Sums16.AsSpan(n / 16, 2 * n / 16), n / 16, two); // tokens 1 and 2
        for (int t = 1; t <= 2; t++)
            Assert.Equal(Q6K.Scalar(wb, act.Q.AsSpan(t * n, n), act.D.AsSpan(t * superBlocks, superBlocks)), two[t - 1]);
        Assert.NotEqual(two[0], two[1]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(8)]
    public void Q6K_FourTokenKernel_IsBitIdenticalToTheSpecificationPerToken(int superBlocks)
    {
        var rng = new Random(superBlocks + 800);
        int n = superBlocks * 256;
        float[] w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] x = Enumerable.Range(0, 5 * n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        w[300 % n] = 0;
        var wb = new BlockQ6K[superBlocks];
        Q6K.QuantizeRow(w, wb);
        var act = new QuantizedActivations();
        act.QuantizeK(x, 5, n);
        if (!Avx2.IsSupported) return;
        act.PrepareSums16(5);
        var four = new float[4];
        Q6K.V256x4(wb, act.Q.AsSpan(n, 4 * n), n, act.D.AsSpan(superBlocks, 4 * superBlocks), superBlocks, act.Sums16.AsSpan(n / 16, 4 * n / 16), n / 16, four); // tokens 1–4
        for (int t = 1; t <= 4; t++)
        {
            float alone = Q6K.Scalar(wb, act.Q.AsSpan(t * n, n), act.D.AsSpan(t * superBlocks, superBlocks));
            Assert.Equal(BitConverter.SingleToInt32Bits(alone), BitConverter.SingleToInt32Bits(four[t - 1]));
        }
        Assert.Equal(4, four.Distinct().Count());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]  // pairs of blocks only
    [InlineData(11)] // pairs and one block left
    public void Q6K_Dot_EveryPathEqualsScalarAndMatchesFloat(int superBlocks)
    {
        var rng = new Random(superBlocks + 600);
        int n = superBlocks * 256;
        float[] w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var wb = new BlockQ6K[superBlocks];
        Q6K.QuantizeRow(w, wb);
        var act = new QuantizedActivations();
        act.QuantizeK(x, 1, n);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, superBlocks);
        float spec = Q6K.Scalar(wb, q, d);
        if (IntDots128.IsSupported) Assert.Equal(spec, Q6K.V128(wb, q, d)); // integer sums, the same float steps: the same bits
        if (Avx2.IsSupported)
        {
            act.PrepareSums16(1);
            Assert.Equal(spec, Q6K.V256(wb, q, d)); // integer sums, the same float steps: the same bits
            Assert.Equal(spec, Q6K.V256(wb, q, d, act.Sums16.AsSpan(0, n / 16)));
        }
        var wd = new float[n];
        Q6K.DequantizeRow(wb, wd);
        double exact = 0;
        for (int i = 0; i < n; i++) exact += (double)wd[i] * act.Q[i] * act.D[i / 256];
        Assert.Equal(exact, spec, 1e-3 * superBlocks);
    }

    [Theory]
    [InlineData(GgmlType.Q4_0, 1)]
    [InlineData(GgmlType.Q4_0, 3)]
    [InlineData(GgmlType.Q4_0, 17)]
    [InlineData(GgmlType.Q5_0, 1)]
    [InlineData(GgmlType.Q5_0, 5)]
    [InlineData(GgmlType.Q5_0, 44)]
    public void Q4_0AndQ5_0_Dot_EveryPathEqualsScalarAndMatchesFloat(GgmlType t, int blocks)
    {
        var rng = new Random(blocks * 31 + (int)t);
        int n = blocks * 32;
        float[] w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        var wb = new byte[t.Traits().RowBytes(n)];
        t.Traits().Quantize(w, wb);
        var act = new QuantizedActivations();
        act.Quantize(x, 1, n);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, blocks);
        float spec = LegacyQuants.Scalar(t, wb, q, d);
        if (Avx2.IsSupported) Assert.Equal(spec, LegacyQuants.V256(t, wb, q, d, act.BlockSum.AsSpan(0, blocks)), Math.Abs(spec) * 1e-5 + 1e-5 * blocks);
        if (IntDots128.IsSupported) Assert.Equal(spec, LegacyQuants.V128(t, wb, q, d)); // exact sums, the same float steps: same bits
        var wd = new float[n];
        t.Traits().Dequantize(wb, wd);
        double exact = 0;
        for (int i = 0; i < n; i++) exact += (double)wd[i] * act.Q[i] * act.D[i / 32];
        Assert.Equal(exact, spec, 1e-4 * blocks);
    }

    /// <summary>Q2_K and Q3_K: the AVX2 kernels give the specification's bits, and the specification the float sum of
    /// the dequantised values (the codes' weights as <see cref="KQuants"/> decodes them), on one to eleven super-blocks
    /// (2816: the shared experts' down projection).</summary>
    [Theory]
    [InlineData(GgmlType.Q2_K, 1)]
    [InlineData(GgmlType.Q2_K, 11)]
    [InlineData(GgmlType.Q3_K, 1)]
    [InlineData(GgmlType.Q3_K, 11)]
    public void Q2KAndQ3K_Dot_EveryPathEqualsScalarAndMatchesFloat(GgmlType t, int superBlocks)
    {
        var rng = new Random(superBlocks * 7 + (int)t);
        int n = superBlocks * 256;
        float[] w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 0.8)).ToArray();
        float[] x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        var wb = new byte[t.Traits().RowBytes(n)];
        t.Traits().Quantize(w, wb);
        AssertDotsAgree(t, wb, x, superBlocks, 1e-4 * n);
    }

    /// <summary>The four-token Q2_K and Q3_K kernels give each token the one-token kernel's bits.</summary>
    [Theory]
    [InlineData(GgmlType.Q2_K, 3)]
    [InlineData(GgmlType.Q3_K, 11)]
    public void Q2KAndQ3K_FourTokenKernel_IsBitIdenticalToOneTokenAtATime(GgmlType t, int superBlocks)
    {
        if (!Avx2.IsSupported) return;
        var rng = new Random(superBlocks + 77 * (int)t);
        int cols = superBlocks * 256;
        var wb = new byte[t.Traits().RowBytes(cols)];
        t.Traits().Quantize(Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 0.8)).ToArray(), wb);
        var act = new QuantizedActivations();
        act.QuantizeK(Enumerable.Range(0, 4 * cols).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray(), 4, cols);
        act.PrepareSums16(4);
        var four = new float[4];
        if (t == GgmlType.Q2_K) LowBitKQuants.Q2KV256x4(wb, act.Q.AsSpan(0, 4 * cols), cols, act.D.AsSpan(0, 4 * superBlocks), superBlocks, act.Sums16.AsSpan(0, 4 * cols / 16), cols / 16, four);
        else LowBitKQuants.Q3KV256x4(wb, act.Q.AsSpan(0, 4 * cols), cols, act.D.AsSpan(0, 4 * superBlocks), superBlocks, act.Sums16.AsSpan(0, 4 * cols / 16), cols / 16, four);
        for (int k = 0; k < 4; k++)
        {
            ReadOnlySpan<sbyte> q = act.Q.AsSpan(k * cols, cols);
            ReadOnlySpan<float> d = act.D.AsSpan(k * superBlocks, superBlocks);
            ReadOnlySpan<short> s = act.Sums16.AsSpan(k * cols / 16, cols / 16);
            float one = t == GgmlType.Q2_K ? LowBitKQuants.Q2KV256(wb, q, d, s) : LowBitKQuants.Q3KV256(wb, q, d, s);
            Assert.Equal(BitConverter.SingleToInt32Bits(one), BitConverter.SingleToInt32Bits(four[k]));
        }
    }

    /// <summary>Random bytes (every scale, minimum and code pattern, Q3_K's negative scales included) against the
    /// largest activations of both signs: the integer sums stay exact.</summary>
    [Theory]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.Q3_K)]
    public void Q2KAndQ3K_Dot_OfRandomBlocks_EqualsScalar(GgmlType t)
    {
        const int superBlocks = 3, n = superBlocks * 256;
        var rng = new Random(31 + (int)t);
        int blockBytes = t == GgmlType.Q2_K ? LowBitKQuants.Q2KBytes : LowBitKQuants.Q3KBytes;
        var wb = new byte[superBlocks * blockBytes];
        rng.NextBytes(wb);
        for (int b = 0; b < superBlocks; b++) // finite scales
            for (int at = t == GgmlType.Q2_K ? 80 : 108; at < blockBytes; at += 2)
                BitConverter.TryWriteBytes(wb.AsSpan(b * blockBytes + at), HalfTable.FromFloat((float)(rng.NextDouble() * 0.05)));
        float[] x = Enumerable.Range(0, n).Select(i => i / 16 % 3 == 0 ? -2f : 2f).ToArray();
        AssertDotsAgree(t, wb, x, superBlocks, 1e-3);
    }

    private static void AssertDotsAgree(GgmlType t, byte[] wb, float[] x, int superBlocks, double tolerance)
    {
        int n = superBlocks * 256;
        var act = new QuantizedActivations();
        act.QuantizeK(x, 1, n);
        act.PrepareSums16(1);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, superBlocks);
        Span<short> s = act.Sums16.AsSpan(0, n / 16);
        float spec = t == GgmlType.Q2_K ? LowBitKQuants.Q2KScalar(wb, q, d, s) : LowBitKQuants.Q3KScalar(wb, q, d);
        if (Avx2.IsSupported)
        {
            float v = t == GgmlType.Q2_K ? LowBitKQuants.Q2KV256(wb, q, d, s) : LowBitKQuants.Q3KV256(wb, q, d, s);
            Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(v));
        }
        if (IntDots128.IsSupported)
        {
            float v = t == GgmlType.Q2_K ? LowBitKQuants.Q2KV128(wb, q, d, s) : LowBitKQuants.Q3KV128(wb, q, d);
            Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(v));
        }
        var wd = new float[n];
        t.Traits().Dequantize(wb, wd);
        double exact = 0;
        for (int i = 0; i < n; i++) exact += (double)wd[i] * act.Q[i] * act.D[i / 256];
        Assert.Equal(exact, spec, Math.Max(tolerance, Math.Abs(exact) * 1e-5));
    }

    /// <summary>IQ4_XS: the AVX2 kernel gives the specification's bits and the specification the float sum of the
    /// dequantised values, on quantised rows and on random bytes (every scale, negative ones included, and code).</summary>
    [Theory]
    [InlineData(1, false)]
    [InlineData(11, false)]
    [InlineData(3, true)]
    public void Iq4Xs_Dot_EveryPathEqualsScalarAndMatchesFloat(int superBlocks, bool randomBytes)
    {
        var rng = new Random(superBlocks * 3 + (randomBytes ? 1 : 0));
        int n = superBlocks * 256;
        var wb = new byte[superBlocks * Iq4Xs.BlockBytes];
        if (randomBytes)
        {
            rng.NextBytes(wb);
            for (int b = 0; b < superBlocks; b++)
                BitConverter.TryWriteBytes(wb.AsSpan(b * Iq4Xs.BlockBytes), HalfTable.FromFloat((float)(rng.NextDouble() * 0.01)));
        }
        else WeightFormat.IQ4_XS.Traits().Quantize(Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), wb);
        float[] x = randomBytes
            ? Enumerable.Range(0, n).Select(i => i / 32 % 3 == 0 ? -2f : 2f).ToArray()
            : Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        var act = new QuantizedActivations();
        act.QuantizeK(x, 1, n);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, superBlocks);
        float spec = Iq4Xs.Scalar(wb, q, d);
        if (Avx2.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Iq4Xs.V256(wb, q, d)));
        if (IntDots128.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Iq4Xs.V128(wb, q, d)));
        var wd = new float[n];
        WeightFormat.IQ4_XS.Traits().Dequantize(wb, wd);
        double exact = 0;
        for (int i = 0; i < n; i++) exact += (double)wd[i] * act.Q[i] * act.D[i / 256];
        Assert.Equal(exact, spec, Math.Max(1e-4 * superBlocks, Math.Abs(exact) * 1e-5));
    }

    /// <summary>IQ4_NL through the Q8_0 kernels: the vector codes are the specification's levels (every nibble in
    /// both halves of a block), the row kernels give its sums (128-bit: its bits), on block counts below, at and past
    /// whole eights.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(44)]
    public void Iq4Nl_Dot_EveryPathEqualsScalarAndMatchesFloat(int blocks)
    {
        var block = new byte[18];
        for (int j = 0; j < 16; j++) block[2 + j] = (byte)(j | (15 - j) << 4);
        var codes = Enumerable.Range(0, 32).Select(i => Iq4NlCodes.Code(block, i)).ToArray();
        Assert.Equal(Iq4.Levels.ToArray().Select(v => (int)v).Concat(Iq4.Levels.ToArray().Reverse().Select(v => (int)v)), codes);
        if (Avx2.IsSupported)
        {
            var v = new sbyte[32];
            System.Runtime.Intrinsics.Vector256.CopyTo(Iq4NlCodes.Codes(ref block[0]), v);
            Assert.Equal(codes, v.Select(c => (int)c));
        }
        Iq4NlCodes.Codes128(ref block[0], out var low, out var high);
        Assert.Equal(codes, Enumerable.Range(0, 16).Select(i => (int)low[i]).Concat(Enumerable.Range(0, 16).Select(i => (int)high[i])));

        var rng = new Random(blocks + 4242);
        int n = blocks * 32;
        float[] w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        var wb = new byte[WeightFormat.IQ4_NL.Traits().RowBytes(n)];
        WeightFormat.IQ4_NL.Traits().Quantize(w, wb);
        var act = new QuantizedActivations();
        act.Quantize(x, 1, n);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, blocks);
        float spec = BlockDots<Iq4NlCodes>.Scalar(wb, q, d);
        if (Avx2.IsSupported) Assert.Equal(spec, BlockDots<Iq4NlCodes>.V256(ref wb[0], blocks, q, d, act.BlockSum.AsSpan(0, blocks)), Math.Abs(spec) * 1e-5 + 1e-5 * blocks);
        if (IntDots128.IsSupported) Assert.Equal(spec, BlockDots<Iq4NlCodes>.V128(wb, q, d));
        var wd = new float[n];
        WeightFormat.IQ4_NL.Traits().Dequantize(wb, wd);
        double exact = 0;
        for (int i = 0; i < n; i++) exact += (double)wd[i] * act.Q[i] * act.D[i / 32];
        Assert.Equal(exact, spec, 1e-4 * blocks);
    }

    /// <summary>Q4_1 and Q5_1 (a minimum per block): the AVX2 kernel gives the specification's bits on block counts
    /// below, at and past whole eights (44: an expert's 1408-wide down projection), and the specification the float sum
    /// of the dequantised values.</summary>
    [Theory]
    [InlineData(GgmlType.Q4_1, 1)]
    [InlineData(GgmlType.Q4_1, 8)]
    [InlineData(GgmlType.Q4_1, 19)]
    [InlineData(GgmlType.Q5_1, 3)]
    [InlineData(GgmlType.Q5_1, 16)]
    [InlineData(GgmlType.Q5_1, 44)]
    public void Q4_1AndQ5_1_Dot_EveryPathEqualsScalarAndMatchesFloat(GgmlType t, int blocks)
    {
        var rng = new Random(blocks * 37 + (int)t);
        int n = blocks * 32;
        float[] w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 0.7)).ToArray(); // off-centre: minimums matter
        float[] x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        var wb = new byte[t.Traits().RowBytes(n)];
        t.Traits().Quantize(w, wb);
        var act = new QuantizedActivations();
        act.Quantize(x, 1, n);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, blocks);
        Span<short> s = act.BlockSum.AsSpan(0, blocks);
        float spec = t == GgmlType.Q5_1 ? MinBlockDots<Q5_1Codes>.Scalar(wb, q, d, s) : MinBlockDots<Q4_1Codes>.Scalar(wb, q, d, s);
        if (Avx2.IsSupported)
        {
            float v = t == GgmlType.Q5_1 ? MinBlockDots<Q5_1Codes>.V256(ref wb[0], blocks, q, d, s) : MinBlockDots<Q4_1Codes>.V256(ref wb[0], blocks, q, d, s);
            Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(v)); // exact sums, the same float steps
        }
        if (IntDots128.IsSupported)
        {
            float v = t == GgmlType.Q5_1 ? MinBlockDots<Q5_1Codes>.V128(wb, q, d, s) : MinBlockDots<Q4_1Codes>.V128(wb, q, d, s);
            Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(v));
        }
        var wd = new float[n];
        t.Traits().Dequantize(wb, wd);
        double exact = 0;
        for (int i = 0; i < n; i++) exact += (double)wd[i] * act.Q[i] * act.D[i / 32];
        Assert.Equal(exact, spec, 1e-4 * blocks);
    }

    /// <summary>Q5_1's largest codes (every nibble and fifth bit set) against activation codes of ±127, through the
    /// matrix a GGUF file's Q5_1 rows get: the sums stay exact, so the result is the float sum of the values.</summary>
    [Fact]
    public void Q5_1Matrix_OfTheLargestCodes_MatchesTheFloatSum()
    {
        const int rows = 3, blocks = 11, cols = blocks * 32;
        var bytes = new byte[rows * blocks * 24];
        for (int blk = 0; blk < rows * blocks; blk++)
        {
            Span<byte> b = bytes.AsSpan(blk * 24, 24);
            BitConverter.TryWriteBytes(b, HalfTable.FromFloat(0.01f));
            BitConverter.TryWriteBytes(b[2..], HalfTable.FromFloat(blk % 2 == 0 ? -0.2f : 0.05f));
            b[4..].Fill(0xFF);
        }
        using Matrix m = Matrix.Create(WeightFormat.Q5_1, rows, cols);
        m.ReadStoredRows(0, rows, span => bytes.CopyTo(span));
        var x = new float[cols];
        for (int i = 0; i < cols; i++) x[i] = i / 32 % 3 == 0 ? -1f : 1f;
        var y = new float[rows];
        m.Forward(x, y, 1);
        var row = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            WeightFormat.Q5_1.Traits().Dequantize(bytes.AsSpan(r * blocks * 24, blocks * 24), row);
            double exact = 0;
            for (int i = 0; i < cols; i++) exact += (double)row[i] * x[i];
            Assert.Equal(exact, y[r], Math.Abs(exact) * 1e-5 + 1e-4);
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_0, 1)]
    [InlineData(GgmlType.Q4_0, 13)]
    [InlineData(GgmlType.Q4_0, 19)]
    [InlineData(GgmlType.Q5_0, 8)]
    [InlineData(GgmlType.Q5_0, 44)]
    public void Q4_0AndQ5_0_FourTokenKernel_IsBitIdenticalToOneTokenAtATime(GgmlType t, int blocks)
    {
        if (!Avx2.IsSupported) return;
        var rng = new Random(blocks + 900);
        int cols = blocks * 32;
        float[] w = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] x = Enumerable.Range(0, 4 * cols).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var wb = new byte[t.Traits().RowBytes(cols)];
        t.Traits().Quantize(w, wb);
        var act = new QuantizedActivations();
        act.Quantize(x, 4, cols);
        var four = new float[4];
        LegacyQuants.V256x4(t, wb, blocks, act.Q.AsSpan(0, 4 * cols), cols, act.D.AsSpan(0, 4 * blocks), blocks, act.BlockSum.AsSpan(0, 4 * blocks), four);
        for (int k = 0; k < 4; k++)
            Assert.Equal(LegacyQuants.V256(t, wb, act.Q.AsSpan(k * cols, cols), act.D.AsSpan(k * blocks, blocks), act.BlockSum.AsSpan(k * blocks, blocks)), four[k]);
        var two = new float[2];
        LegacyQuants.V256x2(t, wb, blocks, act.Q.AsSpan(2 * cols, 2 * cols), cols, act.D.AsSpan(2 * blocks, 2 * blocks), blocks, act.BlockSum.AsSpan(2 * blocks, 2 * blocks), two);
        Assert.Equal(four[2], two[0]);
        Assert.Equal(four[3], two[1]);
    }

    [Theory]
    [InlineData(WeightFormat.Q6_K, 512)]
    [InlineData(WeightFormat.Q5_0, 96)]
    [InlineData(WeightFormat.Q3_K, 256)]
    [InlineData(WeightFormat.Q2_K, 2816)]
    [InlineData(WeightFormat.Q4_1, 32)]
    [InlineData(WeightFormat.Q5_1, 1408)]
    [InlineData(WeightFormat.Q4_0, 64)]
    [InlineData(WeightFormat.Q5_0, 1408)]
    [InlineData(WeightFormat.IQ4_XS, 512)]
    [InlineData(WeightFormat.IQ4_NL, 96)]
    [InlineData(WeightFormat.IQ4_NL, 1408)] // the Q8_0 row kernels: eight-block groups and four blocks over, four tokens at once and one
    public void GgmlMatrices_ForwardEqualsDequantisedProduct(WeightFormat f, int cols)
    {
        var rng = new Random(cols);
        const int rows = 13, n = 5; // one group of four tokens and a single one
        float[] w = Enumerable.Range(0, rows * cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] x = Enumerable.Range(0, n * cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        using Matrix m = Matrix.FromValues(rows, cols, w, f);
        var y = new float[n * rows];
        m.Forward(x, y, n);
        var row = new float[cols];
        for (int o = 0; o < rows; o++)
        {
            m.DequantizeRow(o, row);
            for (int t = 0; t < n; t++)
            {
                double exact = 0;
                for (int c = 0; c < cols; c++) exact += (double)row[c] * x[t * cols + c];
                // Formats with integer kernels quantise the activations to 8 bits (≈ max|x|/127/√12 per value); the others use them as they are
                Assert.Equal(exact, y[t * rows + o], f.Traits().Activations != ActivationKind.Float ? 0.01 * Math.Sqrt(cols) : 1e-4);
            }
        }
    }
}

internal static class ExceptionExtensions
{
    public static void Throw(this Exception e) => throw e;
}

public class QuantizedActivationsTests
{
    [Theory]
    [InlineData(1, 32)]
    [InlineData(3, 96)]
    [InlineData(5, 512)]
    public void Quantize_MatchesThePerValueDefinition(int rows, int cols)
    {
        var rng = new Random(rows * cols);
        float[] x = Enumerable.Range(0, rows * cols).Select(_ => (float)(rng.NextDouble() * 8 - 4)).ToArray();
        x[5] = 0; // exact zeros and halves round as the scalar rule says
        var a = new QuantizedActivations();
        foreach (int block in cols % 256 == 0 ? new[] { 32, 256 } : [32])
        {
            if (block == 32) a.Quantize(x, rows, cols); else a.QuantizeK(x, rows, cols);
            for (int b = 0; b < rows * cols / block; b++)
            {
                float amax = x.Skip(b * block).Take(block).Max(MathF.Abs), d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
                Assert.Equal(d, a.D[b]);
                for (int i = b * block; i < (b + 1) * block; i++)
                    Assert.Equal((sbyte)(int)MathF.Round(x[i] * inv, MidpointRounding.ToEven), a.Q[i]);
            }
        }
    }

    /// <summary>Our Q8_0, Q4_0, Q5_0, Q5_1 and Q2_K–Q6_K quantisers write the bytes ggml's quantize_row_*_ref write (what
    /// llama-quantize makes without an importance matrix), on rows made by tests/data/quant/ggml_quantise.c: uniform,
    /// tiny, with outliers, with all-zero sub-blocks and an all-zero block, skewed, with a repeated extreme, with
    /// sub-blocks of 16 and of 32 whose scale rounds to zero, with a sub-block of no negative weight, and halves on a
    /// scale of one (ties, which Q8_0 rounds away from zero).</summary>
    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    [InlineData("q5_0")]
    [InlineData("q5_1")]
    [InlineData("q2_k")]
    [InlineData("q3_k")]
    [InlineData("q4_k")]
    [InlineData("q5_k")]
    [InlineData("q6_k")]
    public void Quantisers_WriteGgmlsBytes(string type)
    {
        string[] expected = File.ReadAllLines(GoldenCase.DataPath("quant", $"{type}_ggml.txt"));
        const int cols = 512;
        uint state = 12345;
        float Next()
        {
            state = state * 1664525u + 1013904223u;
            return (float)(int)(state >> 8) / 16777216f - 0.5f;
        }
        Assert.Equal(11, expected.Length);
        var x = new float[cols];
        for (int r = 0; r < expected.Length; r++)
        {
            for (int i = 0; i < cols; i++)
            {
                float v = Next();
                if (r == 1) v *= 1e-3f;
                if (r == 2 && i % 37 == 0) v *= 40f;
                if (r == 3 && i / 16 % 3 == 0) v = 0f;
                if (r == 4 && i < 256) v = 0f;
                if (r == 5) v = v > 0 ? v * v : -v * v * 3;
                if (r == 6 && i % 16 == 5) v = -2f;
                if (r == 7 && i / 16 == 2) v *= 1e-6f;
                if (r == 8 && i / 32 == 3) v *= 1e-6f;
                if (r == 9 && i / 32 == 5) v = MathF.Abs(v) + 1;
                if (r == 10) v = i % 32 == 0 ? 127f : (float)((int)(v * 512) % 254) / 2;
                x[i] = v;
            }
            byte[] bytes = type switch
            {
                "q8_0" => Quantised<BlockQ8_0>(x, (s, d) => Q8_0.QuantizeRow(s, d), BlockQ8_0.Size),
                "q4_0" => Quantise(x, 144, LegacyQuants.QuantizeQ4_0),
                "q5_0" => Quantise(x, 176, LegacyQuants.QuantizeQ5_0),
                "q5_1" => Quantise(x, 192, LegacyQuants.QuantizeQ5_1),
                "q2_k" => Quantise(x, 84, KQuants.QuantizeQ2K),
                "q3_k" => Quantise(x, 110, KQuants.QuantizeQ3K),
                "q4_k" => Quantised<BlockQ4K>(x, (s, d) => Q4K.QuantizeRow(s, d)),
                "q5_k" => Quantise(x, 176, KQuants.QuantizeQ5K),
                _ => Quantised<BlockQ6K>(x, (s, d) => Q6K.QuantizeRow(s, d)),
            };
            Assert.Equal(expected[r], Convert.ToHexStringLower(bytes));
        }
    }

    /// <summary>The Q8_0 quantiser's vector rounding (truncate, then a step where the remainder is a half or more) gives
    /// ggml's roundf codes — <see cref="MathF.Round(float, MidpointRounding)"/> away from zero of x · (1 / d) — on 4,000
    /// blocks, a quarter of them halves on a scale of one (every code a tie) and a quarter with one large outlier.</summary>
    [Fact]
    public void Q8_0Quantiser_RoundsHalvesAwayFromZero_AsRoundf()
    {
        var rng = new Random(3);
        var x = new float[32];
        var block = new BlockQ8_0[1];
        for (int t = 0; t < 4000; t++)
        {
            for (int i = 0; i < 32; i++)
                x[i] = t % 4 == 0 ? (i == 0 ? 127f : rng.Next(-254, 255) / 2f) : (float)(rng.NextDouble() - 0.5) * MathF.Pow(10, rng.Next(-4, 4));
            if (t % 4 == 1) x[rng.Next(32)] *= 1000;
            Q8_0.QuantizeRow(x, block);
            float amax = x.Max(MathF.Abs), d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
            Assert.Equal(HalfTable.FromFloat(d), block[0].D);
            for (int i = 0; i < 32; i++) Assert.Equal((sbyte)MathF.Round(x[i] * inv, MidpointRounding.AwayFromZero), block[0].Qs[i]);
        }
    }

    private delegate void RowQuantiser<T>(ReadOnlySpan<float> x, Span<T> dst);

    private static byte[] Quantised<T>(float[] x, RowQuantiser<T> quantise, int perBlock = 256) where T : unmanaged
    {
        var blocks = new T[x.Length / perBlock];
        quantise(x, blocks);
        return System.Runtime.InteropServices.MemoryMarshal.AsBytes(blocks.AsSpan()).ToArray();
    }

    private static byte[] Quantise(float[] x, int blockBytes, RowQuantiser<byte> quantise)
    {
        var bytes = new byte[x.Length / 256 * blockBytes];
        quantise(x, bytes);
        return bytes;
    }

    /// <summary>make_qkx2_quants run for eight sub-blocks at once (one a lane) gives each the scalar loop's scale,
    /// minimum and codes, on 1,000 super-blocks of varied sub-blocks (spreads 1e-6 to 100, shifted all positive,
    /// repeated values, a flat sub-block) for Q4_K's, Q5_K's and Q2_K's ranges (nmax 15, 31, 3).</summary>
    [Fact]
    public void MakeQkx2Fit_EightSubBlocksInLanes_MatchesTheScalarLoop()
    {
        var rng = new Random(7);
        var x = new float[256];
        var w = new float[256];
        var vector = new byte[256];
        var scalar = new byte[32];
        var scales = new float[8];
        var mins = new float[8];
        // Q4_K's and Q5_K's fits (32 values, squared errors), then Q2_K's (16 values, absolute errors, weights |x|).
        foreach ((int n, int nmax, float rmin, int nstep, bool absolute) in new[] { (32, 15, -1f, 20, false), (32, 31, -0.5f, 15, false), (32, 3, -0.5f, 15, false), (16, 3, -0.5f, 15, true) })
            for (int t = 0; t < 1000; t++)
            {
                for (int j = 0; j < 8; j++)
                {
                    float spread = MathF.Pow(10, rng.Next(-6, 3)), shift = (t + j) % 4 == 0 ? spread * (float)rng.NextDouble() : 0;
                    for (int i = 0; i < n; i++)
                    {
                        float v = (float)(rng.NextDouble() - 0.5) * spread + shift;
                        if ((t + j) % 7 == 0 && i % 5 == 0) v = x[n * j]; // repeated values
                        if (t % 50 == 0 && j == 3) v = -0.25f;           // a flat sub-block
                        if (absolute && (t + j) % 11 == 0 && i % 3 == 0) v = 0; // weights of zero
                        x[n * j + i] = v;
                        w[n * j + i] = absolute ? MathF.Abs(v) : MathF.Abs(v) + spread * 0.1f;
                    }
                }
                ScaleMinFit.Fit8(x, w, nmax, rmin, 0.1f, nstep, scales, mins, vector, n, absolute);
                for (int j = 0; j < 8; j++)
                {
                    float scale = ScaleMinFit.FitScalar(x.AsSpan(n * j, n), w.AsSpan(n * j, n), nmax, rmin, 0.1f, nstep, scalar, out float min, absolute);
                    Assert.Equal(BitConverter.SingleToInt32Bits(scale), BitConverter.SingleToInt32Bits(scales[j]));
                    Assert.Equal(BitConverter.SingleToInt32Bits(min), BitConverter.SingleToInt32Bits(mins[j]));
                    Assert.True(vector.AsSpan(n * j, n).SequenceEqual(scalar.AsSpan(0, n)), $"codes differ (n {n}, nmax {nmax}, case {t}, sub-block {j})");
                }
            }
    }
}
