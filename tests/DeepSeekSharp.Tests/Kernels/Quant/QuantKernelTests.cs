using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Tests.Kernels.Quant;

public class QuantKernelTests
{
    private static float[] Random(Random rng, int n, float scale = 1f) =>
        Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();

    [Fact]
    public void BlockSizes_MatchGgml()
    {
        Assert.Equal(34, Unsafe.SizeOf<BlockQ8_0>());
        Assert.Equal(144, Unsafe.SizeOf<BlockQ4K>());
        Assert.Equal(176, Unsafe.SizeOf<BlockQ5K>());
    }

    [Theory]
    [InlineData(37, 96, false)] // per 32; rows split between threads in chunks of 16, a short last one
    [InlineData(20, 512, true)] // per 256
    public void ActivationsQuantisedOnSeveralThreads_EqualOneRowAtATime(int rows, int cols, bool perSuperBlock)
    {
        var rng = new Random(rows + cols);
        float[] x = Random(rng, rows * cols, 4f);
        var together = new QuantizedActivations();
        using (var pool = new DeepSeekSharp.Kernels.WorkerPool(2))
        using (DeepSeekSharp.Kernels.WorkerPool.Use(pool))
        {
            if (perSuperBlock) together.QuantizeK(x, rows, cols);
            else together.Quantize(x, rows, cols);
        }
        int perRowScales = cols / (perSuperBlock ? 256 : 32);
        for (int r = 0; r < rows; r++)
        {
            var one = new QuantizedActivations();
            if (perSuperBlock) one.QuantizeK(x.AsSpan(r * cols, cols), 1, cols);
            else one.Quantize(x.AsSpan(r * cols, cols), 1, cols);
            Assert.Equal(one.Q.AsSpan(0, cols).ToArray(), together.Q.AsSpan(r * cols, cols).ToArray());
            Assert.Equal(one.D.AsSpan(0, perRowScales).ToArray(), together.D.AsSpan(r * perRowScales, perRowScales).ToArray());
            Assert.Equal(one.BlockSum.AsSpan(0, cols / 32).ToArray(), together.BlockSum.AsSpan(r * cols / 32, cols / 32).ToArray());
        }
    }

    private static double Rmse(float[] a, float[] b) => Math.Sqrt(a.Zip(b).Average(p => (double)(p.First - p.Second) * (p.First - p.Second)));

    [Fact]
    public void Q8_0_RoundTrip_ErrorWithinGgmlBound()
    {
        float[] x = Random(new Random(1), 4096);
        var blocks = new BlockQ8_0[4096 / 32];
        Q8_0.QuantizeRow(x, blocks);
        var back = new float[4096];
        Q8_0.DequantizeRow(blocks, back);
        Assert.True(Rmse(x, back) < 0.002 * 2, $"rmse {Rmse(x, back)}"); // half a step of 1/127 at most per value: ≈ 0.0023 uniform
        Assert.True(Rmse(x, back) < 0.005);
    }

    [Fact]
    public void Q4K_RoundTrip_ErrorWithinBound()
    {
        float[] x = Random(new Random(2), 4096);
        var blocks = new BlockQ4K[4096 / 256];
        Q4K.QuantizeRow(x, blocks);
        var back = new float[4096];
        Q4K.DequantizeRow(blocks, back);
        // 4 bits over a range of 2: step 2/15 ≈ 0.133, uniform error rmse ≈ step/√12 ≈ 0.039 for a plain min/max fit;
        // the ggml-style search (weighted least squares over 21 candidate scales) measures 0.032.
        Assert.True(Rmse(x, back) < 0.035, $"rmse {Rmse(x, back)}");
    }

    [Fact]
    public void HalfToSingle_InRegisters_MatchesTheTable_ForEveryPattern()
    {
        var halves = new ushort[16];
        var floats = new float[16];
        for (int start = 0; start < 65536; start += 16)
        {
            for (int i = 0; i < 16; i++) halves[i] = (ushort)(start + i);
            if (Avx512F.IsSupported)
            {
                Vector512.CopyTo(HalfTable.ToSingle(Vector256.Create(halves)), floats);
                AssertSameAsTable(start, 16, floats);
            }
            if (Avx2.IsSupported)
            {
                Array.Clear(floats);
                Vector256.CopyTo(HalfTable.ToSingle(Vector128.Create(halves.AsSpan(0, 8))), floats);
                Vector256.CopyTo(HalfTable.ToSingle(Vector128.Create(halves.AsSpan(8, 8))), floats.AsSpan(8));
                AssertSameAsTable(start, 16, floats);
            }
        }

        static void AssertSameAsTable(int start, int n, float[] floats)
        {
            for (int i = 0; i < n; i++)
            {
                float want = HalfTable.Values[start + i];
                Assert.True(BitConverter.SingleToInt32Bits(floats[i]) == BitConverter.SingleToInt32Bits(want) || float.IsNaN(floats[i]) && float.IsNaN(want),
                    $"0x{start + i:X4}: {floats[i]:R} != {want:R}");
            }
        }
    }

    [Theory]
    [InlineData(32)]
    [InlineData(256)]
    public void ActivationQuantisation_EveryPathGivesTheSpecificationsCodes(int block)
    {
        var rng = new Random(block);
        for (int trial = 0; trial < 50; trial++)
        {
            float[] v = Random(rng, block, 1 + trial);
            if (trial % 5 == 1) Array.Clear(v); // an all-zero block: scale 0, codes 0
            if (trial % 5 == 2)
                for (int i = 0; i < block; i += 3) v[i] = (i % 7 - 3 + 0.5f) * (trial / 127f); // products at exact halves: ties to even
            float amax = QuantizedActivations.MaxAbs(v), d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
            var want = new sbyte[block];
            QuantizedActivations.Round(v, inv, want);
            var got = new sbyte[block];
            if (Vector128.IsHardwareAccelerated)
            {
                Assert.Equal(amax, QuantizedActivations.MaxAbsV128(v));
                QuantizedActivations.RoundV128(v, inv, got);
                Assert.Equal(want, got);
            }
            if (Avx2.IsSupported)
            {
                Assert.Equal(amax, QuantizedActivations.MaxAbsV256(v));
                QuantizedActivations.RoundV256(v, inv, got);
                Assert.Equal(want, got);
            }
            for (int b = 0; b < block; b += 32) Assert.Equal(want.Skip(b).Take(32).Sum(q => q), QuantizedActivations.SumOf(want.AsSpan(b, 32)));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(14)]
    [InlineData(17)]
    [InlineData(64)]
    public void Q8_0_Dot_EveryPathEqualsScalarAndMatchesFloat(int blocks)
    {
        var rng = new Random(blocks);
        float[] w = Random(rng, blocks * 32), x = Random(rng, blocks * 32, 3f);
        var wb = new BlockQ8_0[blocks];
        Q8_0.QuantizeRow(w, wb);
        var act = new QuantizedActivations();
        act.Quantize(x, 1, blocks * 32);
        float spec = Q8_0.Scalar(wb, act.Q.AsSpan(0, blocks * 32), act.D.AsSpan(0, blocks));
        // integer block sums are exact, so paths differ only in float rounding of the scaled sums
        if (Avx2.IsSupported) Assert.Equal(spec, Q8_0.V256(wb, act.Q.AsSpan(0, blocks * 32), act.D.AsSpan(0, blocks), act.BlockSum.AsSpan(0, blocks)), 1e-5 * blocks);
        if (IntDots128.IsSupported) Assert.Equal(spec, Q8_0.V128(wb, act.Q.AsSpan(0, blocks * 32), act.D.AsSpan(0, blocks))); // exact sums, the same float steps: same bits
        var wd = new float[blocks * 32];
        Q8_0.DequantizeRow(wb, wd);
        double exact = wd.Zip(x).Sum(p => (double)p.First * p.Second);
        // activation quantisation: half a step of max|x|/127 per value
        Assert.Equal(exact, spec, 0.02 * Math.Sqrt(blocks * 32));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(19)]
    [InlineData(44)]
    [InlineData(64)]
    public void Q8_0_FourTokenKernel_IsBitIdenticalToOneTokenAtATime(int blocks)
    {
        if (!Avx2.IsSupported) return;
        var rng = new Random(blocks + 7);
        int cols = blocks * 32;
        float[] w = Random(rng, cols), x = Random(rng, 4 * cols, 2f);
        var wb = new BlockQ8_0[blocks];
        Q8_0.QuantizeRow(w, wb);
        var act = new QuantizedActivations();
        act.Quantize(x, 4, cols);
        var four = new float[4];
        Q8_0.V256x4(wb, act.Q.AsSpan(0, 4 * cols), cols, act.D.AsSpan(0, 4 * blocks), blocks, act.BlockSum.AsSpan(0, 4 * blocks), four);
        for (int t = 0; t < 4; t++)
            Assert.Equal(Q8_0.V256(wb, act.Q.AsSpan(t * cols, cols), act.D.AsSpan(t * blocks, blocks), act.BlockSum.AsSpan(t * blocks, blocks)), four[t]); // bit-identical
        var two = new float[2];
        Q8_0.V256x2(wb, act.Q.AsSpan(cols, 2 * cols), cols, act.D.AsSpan(blocks, 2 * blocks), blocks, act.BlockSum.AsSpan(blocks, 2 * blocks), two); // tokens 1 and 2
        Assert.Equal(four[1], two[0]);
        Assert.Equal(four[2], two[1]);
        if (!BlockDots<Q8_0Codes>.CanGroup) return; // the grouped kernel needs AVX-VNNI (the run prints its paths)
        act.GroupBlocks(4);
        for (int tokens = 2; tokens <= 4; tokens++)
        {
            // Tokens 4 - tokens .. 3: the grouped kernel reads from an offset, and writes only its tokens.
            int first = 4 - tokens;
            var grouped = new float[5];
            BlockDots<Q8_0Codes>.V256Grouped(ref Unsafe.As<BlockQ8_0, byte>(ref wb[0]), blocks, tokens, act.Grouped.AsSpan(first * cols, tokens * cols),
                act.Q.AsSpan(first * cols, tokens * cols), cols, act.D.AsSpan(first * blocks, tokens * blocks), blocks,
                act.BlockSum.AsSpan(first * blocks, tokens * blocks), grouped);
            for (int t = 0; t < tokens; t++) Assert.Equal(BitConverter.SingleToInt32Bits(four[first + t]), BitConverter.SingleToInt32Bits(grouped[t]));
            Assert.All(grouped[tokens..], v => Assert.Equal(0f, v));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(19)]
    public void GroupBlocks_TransposesEachWholeGroupOfEightBlocksByFourByteGroups(int blocks)
    {
        int cols = blocks * 32;
        var act = new QuantizedActivations();
        act.Quantize(Random(new Random(blocks), 2 * cols, 3f), 2, cols);
        act.GroupBlocks(2);
        Assert.True(act.IsGrouped(2));
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < cols; i++)
            {
                int block = i / 32, group = block / 8, j = block % 8, q = i % 32 / 4, k = i % 4;
                int at = group < blocks / 8 ? group * 256 + (8 * q + j) * 4 + k : i; // blocks past the whole groups stay
                Assert.Equal(act.Q[r * cols + i], act.Grouped[r * cols + at]);
            }
        act.Quantize(Random(new Random(1), cols, 1f), 1, cols);
        Assert.False(act.IsGrouped(1)); // new codes: the grouping is stale
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void Q4K_Dot_EveryPathEqualsScalarAndMatchesFloat(int superBlocks)
    {
        var rng = new Random(superBlocks + 100);
        int n = superBlocks * 256;
        float[] w = Random(rng, n), x = Random(rng, n, 2f);
        var wb = new BlockQ4K[superBlocks];
        Q4K.QuantizeRow(w, wb);
        var act = new QuantizedActivations();
        act.QuantizeK(x, 1, n);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, superBlocks);
        Span<short> s = act.BlockSum.AsSpan(0, superBlocks * 8);
        float spec = Q4K.Scalar(wb, q, d, s);
        if (Avx2.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Q4K.V256(wb, q, d, s))); // same steps: same bits
        if (IntDots128.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Q4K.V128(wb, q, d, s)));
        var wd = new float[n];
        Q4K.DequantizeRow(wb, wd);
        var xd = new float[n];
        for (int i = 0; i < n; i++) xd[i] = act.Q[i] * act.D[i / 256];
        double exact = wd.Zip(xd).Sum(p => (double)p.First * p.Second); // same quantised x: only float rounding differs
        Assert.Equal(exact, spec, 1e-3 * superBlocks);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void Q4K_FourTokenKernel_IsBitIdenticalToOneTokenAtATime(int superBlocks)
    {
        if (!Avx2.IsSupported) return;
        var rng = new Random(superBlocks + 300);
        int cols = superBlocks * 256;
        float[] w = Random(rng, cols), x = Random(rng, 4 * cols, 2f);
        var wb = new BlockQ4K[superBlocks];
        Q4K.QuantizeRow(w, wb);
        var act = new QuantizedActivations();
        act.QuantizeK(x, 4, cols);
        var four = new float[4];
        Q4K.V256x4(wb, act.Q.AsSpan(0, 4 * cols), cols, act.D.AsSpan(0, 4 * superBlocks), superBlocks,
            act.BlockSum.AsSpan(0, 4 * superBlocks * 8), superBlocks * 8, four);
        for (int t = 0; t < 4; t++)
            Assert.Equal(Q4K.V256(wb, act.Q.AsSpan(t * cols, cols), act.D.AsSpan(t * superBlocks, superBlocks),
                act.BlockSum.AsSpan(t * superBlocks * 8, superBlocks * 8)), four[t]); // bit-identical
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void Q5K_Dot_EveryPathEqualsScalarAndMatchesFloat(int superBlocks)
    {
        var rng = new Random(superBlocks + 500);
        int n = superBlocks * 256;
        float[] w = Random(rng, n), x = Random(rng, n, 2f);
        var bytes = new byte[superBlocks * BlockQ5K.Bytes];
        KQuants.QuantizeQ5K(w, bytes);
        BlockQ5K[] wb = MemoryMarshal.Cast<byte, BlockQ5K>(bytes).ToArray();
        Assert.Contains(Enumerable.Range(0, n), i => Q5K.Code(ref wb[i / 256], i % 256) >= 16); // fifth bits in use
        var act = new QuantizedActivations();
        act.QuantizeK(x, 1, n);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, superBlocks);
        Span<short> s = act.BlockSum.AsSpan(0, superBlocks * 8);
        float spec = Q5K.Scalar(wb, q, d, s);
        if (Avx2.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Q5K.V256(wb, q, d, s))); // same steps: same bits
        if (IntDots128.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Q5K.V128(wb, q, d, s)));
        var wd = new float[n];
        KQuants.DequantizeQ5K(bytes, wd); // the format's values, from the bytes
        var xd = new float[n];
        for (int i = 0; i < n; i++) xd[i] = act.Q[i] * act.D[i / 256];
        double exact = wd.Zip(xd).Sum(p => (double)p.First * p.Second); // same quantised x: only float rounding differs
        Assert.Equal(exact, spec, 1e-3 * superBlocks);
    }

    /// <summary>Every code 31 (all nibbles and fifth bits set) against activation codes of ±127 block by block: the
    /// largest integer sums the kernels hold, in both signs; the result must equal the specification's bits and the
    /// float sum of the values.</summary>
    [Fact]
    public void Q5K_Dot_OfTheLargestCodes_EqualsScalar()
    {
        const int superBlocks = 2, n = superBlocks * 256;
        var bytes = new byte[superBlocks * BlockQ5K.Bytes];
        var rng = new Random(77);
        rng.NextBytes(bytes); // scales and minimums of every pattern
        for (int b = 0; b < superBlocks; b++)
        {
            BitConverter.TryWriteBytes(bytes.AsSpan(b * BlockQ5K.Bytes), HalfTable.FromFloat(0.01f));
            BitConverter.TryWriteBytes(bytes.AsSpan(b * BlockQ5K.Bytes + 2), HalfTable.FromFloat(0.003f));
            bytes.AsSpan(b * BlockQ5K.Bytes + 16, 160).Fill(0xFF);
        }
        BlockQ5K[] wb = MemoryMarshal.Cast<byte, BlockQ5K>(bytes).ToArray();
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = i / 32 % 2 == 0 ? 1f : -1f;
        var act = new QuantizedActivations();
        act.QuantizeK(x, 1, n);
        Assert.Equal(127, act.Q[0]);
        Span<sbyte> q = act.Q.AsSpan(0, n);
        Span<float> d = act.D.AsSpan(0, superBlocks);
        Span<short> s = act.BlockSum.AsSpan(0, superBlocks * 8);
        float spec = Q5K.Scalar(wb, q, d, s);
        if (Avx2.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Q5K.V256(wb, q, d, s)));
        if (IntDots128.IsSupported) Assert.Equal(BitConverter.SingleToInt32Bits(spec), BitConverter.SingleToInt32Bits(Q5K.V128(wb, q, d, s)));
        var wd = new float[n];
        KQuants.DequantizeQ5K(bytes, wd);
        double exact = wd.Zip(x).Sum(p => (double)p.First * p.Second);
        Assert.Equal(exact, spec, 1e-3);
    }

    [Fact]
    public void Bf16Dot_EveryPathMatchesScalar()
    {
        var rng = new Random(9);
        foreach (int n in new[] { 0, 1, 15, 16, 17, 33, 100, 257 })
        {
            ushort[] w = Random(rng, n).Select(DeepSeekSharp.Tensors.NumberFormats.FloatToBF16).ToArray();
            float[] x = Random(rng, n);
            float spec = Bf16Dot.Scalar(w, x);
            if (Avx2.IsSupported) Assert.Equal(spec, Bf16Dot.V256(w, x), 1e-5 * Math.Max(1, n / 16.0));
            if (Avx512F.IsSupported) Assert.Equal(spec, Bf16Dot.V512(w, x), 1e-5 * Math.Max(1, n / 16.0));
        }
    }
}
