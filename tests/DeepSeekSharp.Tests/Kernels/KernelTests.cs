using DeepSeekSharp.Linear;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>Each kernel against a plain double-precision loop on random inputs of awkward sizes.</summary>
public class KernelTests
{
    private static float[] Random(Random rng, int n, float scale = 1f) =>
        Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();

    // Vectorised float32 sums against a float64 loop: a few ulps per term over ≤ 300 terms.
    private const double Tol = 1e-5;

    public static TheoryData<int> Lengths() => new([0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 255, 257]);

    private static void Reference(float[] x, float[] w, float[] y, int n, int inDim, int outDim)
    {
        for (int t = 0; t < n; t++)
            for (int o = 0; o < outDim; o++)
            {
                double sum = 0;
                for (int i = 0; i < inDim; i++) sum += (double)x[t * inDim + i] * w[o * inDim + i];
                y[t * outDim + o] = (float)sum;
            }
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void MatrixForward_F32_MatchesScalarReference(int inDim)
    {
        var rng = new Random(inDim);
        foreach (var (n, outDim) in new[] { (1, 1), (1, 13), (3, 29), (5, 64), (2, 600) })
        {
            float[] x = Random(rng, n * inDim), w = Random(rng, outDim * inDim);
            var y = new float[n * outDim];
            var reference = new float[n * outDim];
            using Matrix m = Matrix.FromValues(outDim, inDim, w);
            m.Forward(x, y, n);
            Reference(x, w, reference, n, inDim, outDim);
            for (int i = 0; i < y.Length; i++) Assert.Equal(reference[i], y[i], Tol * Math.Max(1, inDim / 16.0));
        }
    }

    [Fact]
    public void MatrixForward_RowRange_EqualsTheSameRowsOfTheFullProduct()
    {
        var rng = new Random(4);
        float[] x = Random(rng, 2 * 96), w = Random(rng, 50 * 96);
        using Matrix m = Matrix.FromValues(50, 96, w, WeightFormat.Q8_0);
        foreach (int n in new[] { 1, 2 }) // one token has its own loop
        {
            var full = new float[n * 50];
            var part = new float[n * 7];
            m.Forward(x, full, n);
            m.Forward(x, part, n, rowStart: 20, rowCount: 7);
            for (int t = 0; t < n; t++)
                for (int o = 0; o < 7; o++) Assert.Equal(full[t * 50 + 20 + o], part[t * 7 + o]);
        }
    }

    [Fact]
    public void MatrixForward_LargeEnoughToSplitAcrossThreads_EqualsRowByRow()
    {
        var rng = new Random(5);
        const int n = 4, inDim = 256, outDim = 1031; // over the parallel threshold
        float[] x = Random(rng, n * inDim), w = Random(rng, outDim * inDim);
        using Matrix m = Matrix.FromValues(outDim, inDim, w);
        var y = new float[n * outDim];
        m.Forward(x, y, n);
        for (int t = 0; t < n; t++)
            for (int o = 0; o < outDim; o++)
                Assert.Equal(Dot.Compute(w.AsSpan(o * inDim, inDim), x.AsSpan(t * inDim, inDim)), y[t * outDim + o]); // bit-identical
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void RmsNorm_MatchesScalar(int d)
    {
        if (d == 0) return;
        var rng = new Random(d);
        float[] x = Random(rng, 3 * d, 4f), weight = Random(rng, d);
        var y = new float[3 * d];
        RmsNorm.Forward(x, weight, y, 1e-6f);
        for (int r = 0; r < 3; r++)
        {
            double ss = 0;
            for (int i = 0; i < d; i++) ss += (double)x[r * d + i] * x[r * d + i];
            double inv = 1 / Math.Sqrt(ss / d + 1e-6);
            for (int i = 0; i < d; i++) Assert.Equal(x[r * d + i] * inv * weight[i], y[r * d + i], 1e-5);
        }
    }

    [Fact]
    public void RmsNorm_OnHandCheckableInput()
    {
        // mean of squares of (3, 4) is 12.5; 3/√12.5 = 0.8485, 4/√12.5 = 1.1314
        var y = new float[2];
        RmsNorm.Forward([3f, 4f], [1f, 2f], y, 0f);
        Assert.Equal(0.848528, y[0], 1e-5);
        Assert.Equal(2 * 1.131371, y[1], 1e-5);
    }

    [Fact]
    public void Rope_RotatesInterleavedPairsNotHalves()
    {
        float[] x = [1, 2, 3, 4];
        // pair 0 = (1, 2) rotated by 90°, pair 1 = (3, 4) by 0°
        Rope.ApplyInterleaved(x, [0f, 1f], [1f, 0f]);
        Assert.Equal([-2f, 1f, 3f, 4f], x);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(16)]
    [InlineData(64)]
    public void Rope_MatchesComplexMultiplication(int d)
    {
        var rng = new Random(d);
        float[] x = Random(rng, 2 * d), angles = Random(rng, d / 2, 3f);
        float[] cos = angles.Select(MathF.Cos).ToArray(), sin = angles.Select(MathF.Sin).ToArray();
        float[] y = (float[])x.Clone();
        Rope.ApplyInterleaved(y, cos, sin);
        for (int v = 0; v < 2; v++)
            for (int i = 0; i < d / 2; i++)
            {
                var z = new System.Numerics.Complex(x[v * d + 2 * i], x[v * d + 2 * i + 1]) * System.Numerics.Complex.FromPolarCoordinates(1, angles[i]);
                Assert.Equal(z.Real, y[v * d + 2 * i], 1e-5);
                Assert.Equal(z.Imaginary, y[v * d + 2 * i + 1], 1e-5);
            }
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void Softmax_MatchesScalarAndSumsToOne(int n)
    {
        if (n == 0) return;
        var rng = new Random(n);
        float[] x = Random(rng, n, 20f);
        float[] y = (float[])x.Clone();
        Softmax.InPlace(y);
        double max = x.Max(), sum = x.Sum(v => Math.Exp(v - max));
        for (int i = 0; i < n; i++) Assert.Equal(Math.Exp(x[i] - max) / sum, y[i], 1e-6);
    }

    [Fact]
    public void SwiGlu_IsSiluOfGateTimesUp()
    {
        var h = new float[3];
        SwiGlu.Forward([0f, 1f, -2f], [5f, 2f, 3f], h);
        Assert.Equal(0f, h[0]);
        Assert.Equal(2 * (1 / (1 + Math.Exp(-1))), h[1], 1e-6);
        Assert.Equal(3 * (-2 / (1 + Math.Exp(2))), h[2], 1e-6);
    }

    [Theory]
    [InlineData(new float[] { 0.1f, 0.4f, 0.2f, 0.3f }, 2, new[] { 1, 3 })]
    [InlineData(new float[] { 0.5f, 0.5f, 0.1f }, 2, new[] { 0, 1 })]
    [InlineData(new float[] { float.NegativeInfinity, -3f, float.NegativeInfinity, -1f }, 2, new[] { 3, 1 })]
    [InlineData(new float[] { 1f, 2f, 3f }, 3, new[] { 2, 1, 0 })]
    public void TopK_PicksLargestFirstLowerIndexOnTies(float[] values, int k, int[] expected)
    {
        var idx = new int[k];
        TopK.Select(values, idx);
        Assert.Equal(expected, idx);
    }

    [Fact]
    public void TopK_MatchesSortOnRandomInputs()
    {
        var rng = new Random(1);
        for (int trial = 0; trial < 50; trial++)
        {
            float[] v = Random(rng, 1 + trial * 3);
            int k = 1 + trial % v.Length;
            var idx = new int[k];
            TopK.Select(v, idx);
            int[] expected = v.Select((x, i) => (x, i)).OrderByDescending(p => p.x).ThenBy(p => p.i).Take(k).Select(p => p.i).ToArray();
            Assert.Equal(expected, idx);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(19)]
    public void LatentAttention_AbsorbedEqualsExpanded(int count)
    {
        // One head: W_UK [N, C], W_UV [V, C]. Expanded: k_nope = W_UK c, v = W_UV c. Absorbed: q_lat = W_UKᵀ q_nope,
        // out = W_UV (Σ p c). Both must give the same output.
        const int c = 24, r = 8, nope = 12, v = 10;
        var rng = new Random(count);
        float[] cache = Random(rng, count * (c + r)), wuk = Random(rng, nope * c), wuv = Random(rng, v * c);
        float[] qNope = Random(rng, nope), qPe = Random(rng, r);
        using Matrix uk = Matrix.FromValues(nope, c, wuk), uv = Matrix.FromValues(v, c, wuv);
        var kv = new float[count * (nope + v)];
        for (int s = 0; s < count; s++)
        {
            uk.Forward(cache.AsSpan(s * (c + r), c), kv.AsSpan(s * (nope + v), nope), 1);
            uv.Forward(cache.AsSpan(s * (c + r), c), kv.AsSpan(s * (nope + v) + nope, v), 1);
        }
        var expanded = new float[v];
        LatentAttention.Expanded(qNope, qPe, kv, nope + v, 0, cache, c + r, count, 0.3f, new float[count], expanded);

        // q_lat = W_UKᵀ q_nope through the transposed W_UK, as the model folds queries (WkT).
        var wukT = new float[c * nope];
        Transpose.Compute(wuk, nope, c, wukT);
        using Matrix ukT = Matrix.FromValues(c, nope, wukT);
        var qLat = new float[c];
        ukT.Forward(qNope, qLat, 1);
        var lat = new float[c];
        LatentAttention.Absorbed(qLat, qPe, cache, count, 0.3f, new float[count], lat);
        var absorbed = new float[v];
        uv.Forward(lat, absorbed, 1);
        for (int i = 0; i < v; i++) Assert.Equal(expanded[i], absorbed[i], 1e-5);
    }

    [Theory]
    [InlineData(1, 1, 32, 16)]
    [InlineData(3, 37, 96, 32)]    // padded heads, one short block
    [InlineData(8, 64, 512, 64)]   // V2-Lite's widths, exactly one block
    [InlineData(6, 130, 96, 16)]   // three blocks, the last of two positions
    [InlineData(12, 71, 64, 16)]   // three groups of four heads; a short odd block
    [InlineData(16, 64, 512, 64)]  // V2-Lite's heads and widths
    [InlineData(132, 70, 32, 16)]  // more scores than the stack holds (132 × 64): the per-thread scratch
    public void AbsorbedBlocks_Merged_MatchOneHeadAtATime(int heads, int count, int c, int r)
    {
        if (!LatentAttention.HasBlockedAbsorbed(c, r)) return;
        int stride = c + r, padded = (heads + 3) / 4 * 4, block = LatentAttention.BlockPositions;
        int blocks = (count + block - 1) / block;
        var rng = new Random(heads * 100 + count);
        float[] cache = Random(rng, count * stride), queries = new float[padded * stride];
        Random(rng, heads * stride).CopyTo(queries, 0); // padding heads stay zero
        float[] partial = new float[blocks * padded * c], max = new float[blocks * padded], sum = new float[blocks * padded];
        for (int b = 0; b < blocks; b++)
        {
            int n = Math.Min(block, count - b * block);
            LatentAttention.AbsorbedBlock(padded / 4, queries, cache.AsSpan(b * block * stride, n * stride), n, c, r, 0.07f,
                partial.AsSpan(b * padded * c, padded * c), max.AsSpan(b * padded, padded), sum.AsSpan(b * padded, padded));
        }
        for (int h = 0; h < heads; h++)
        {
            var merged = new float[c];
            LatentAttention.AbsorbedMerge(blocks, padded, h, partial, max, sum, merged);
            var one = new float[c];
            LatentAttention.Absorbed(queries.AsSpan(h * stride, c), queries.AsSpan(h * stride + c, r), cache, count, 0.07f, new float[count], one);
            for (int j = 0; j < c; j++) Assert.Equal(one[j], merged[j], 1e-5);
        }
    }

    /// <summary>A deep context keeps eight blocks a slot (from 64 blocks, 4,096 positions, on), each block after a
    /// slot's first folded into it as attended; the merged slots match one head at a time, with block maxima that rise
    /// (the slot's results rescaled) and fall (left as they are) within a slot, and heads attended in parts hold the
    /// bits of heads attended whole.</summary>
    [Theory]
    [InlineData(16, 600, 512, 64)] // V2-Lite's widths: a slot of eight blocks and one of two, the last short
    [InlineData(6, 520, 96, 16)]   // padded heads; the second slot one block of eight positions
    public void AbsorbedBlocks_FoldedIntoSlots_MatchOneHeadAtATime(int heads, int count, int c, int r)
    {
        Assert.Equal((63, 8, 9, 8), (AbsorbedBlocks.SlotsFor(4032), AbsorbedBlocks.SlotsFor(4096), AbsorbedBlocks.SlotsFor(4200), AbsorbedBlocks.BlocksPerSlot(4096)));
        Assert.Equal(1, AbsorbedBlocks.BlocksPerSlot(4032));
        if (!LatentAttention.HasBlockedAbsorbed(c, r)) return;
        int stride = c + r, block = LatentAttention.BlockPositions, per = AbsorbedBlocks.GroupBlocks;
        int n = AbsorbedBlocks.Blocks(count), slots = (n + per - 1) / per;
        var blocks = AbsorbedBlocks.For(heads, c, r, count)!;
        var rng = new Random(heads + count);
        float[] cache = Random(rng, count * stride);
        for (int i = 3 * block * stride; i < 4 * block * stride; i++) cache[i] *= 3; // block 3's max above the blocks before and after it
        var queries = new float[heads * stride];
        for (int h = 0; h < heads; h++)
        {
            float[] q = Random(rng, stride);
            q.CopyTo(blocks.Query(0, h));
            q.CopyTo(blocks.Query(1, h));
            q.CopyTo(queries, h * stride);
        }
        for (int b = 0; b < n; b++)
        {
            int s0 = b * block, rows = Math.Min(block, count - s0);
            blocks.AttendRows(0, b / per, cache.AsSpan(s0 * stride, rows * stride), rows, 0.07f, fold: b % per > 0);
            for (int part = blocks.HeadParts - 1; part >= 0; part--) // token 1: each block's heads in parts, the last part first
                blocks.AttendRows(1, slots + b / per, cache.AsSpan(s0 * stride, rows * stride), rows, 0.07f, part, blocks.HeadParts, fold: b % per > 0);
        }
        for (int h = 0; h < heads; h++)
        {
            blocks.Merge(0, slots, h, 0);
            blocks.Merge(slots, slots, h, 1);
            ReadOnlySpan<float> both = blocks.Latents(h, 2);
            Assert.True(both[..c].SequenceEqual(both[c..]), $"head {h}: parts differ from whole");
            var one = new float[c];
            LatentAttention.Absorbed(queries.AsSpan(h * stride, c), queries.AsSpan(h * stride + c, r), cache, count, 0.07f, new float[count], one);
            for (int j = 0; j < c; j++) Assert.Equal(one[j], both[j], 1e-5);
        }
    }

    /// <summary>Blocks attended in order with the next one's rows read ahead (and each block but the first not touched
    /// again, as decode's runs do) hold the bits of blocks attended one by one, in f32 and bf16 rows: the read-ahead
    /// only fetches.</summary>
    [Theory]
    [InlineData(16, 150)] // three blocks, the last short: the last reads nothing ahead
    [InlineData(8, 64)]   // one block reading ahead a short one
    public void AbsorbedBlocks_ReadingTheNextBlockAhead_HoldTheBitsOfBlocksAttendedOneByOne(int heads, int count)
    {
        const int c = 512, r = 64, stride = c + r, block = LatentAttention.BlockPositions;
        var blocks = AbsorbedBlocks.For(heads, c, r, 512);
        if (blocks is null) return; // no blocked path on this CPU
        var rng = new Random(heads + count);
        float[] rows = Random(rng, (count + block) * stride);
        ushort[] bf16 = [.. rows.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))];
        for (int h = 0; h < heads; h++)
        {
            float[] q = Random(rng, stride);
            q.CopyTo(blocks.Query(0, h));
            q.CopyTo(blocks.Query(1, h));
        }
        int n = AbsorbedBlocks.Blocks(count);
        int Rows(int b) => Math.Min(block, count - b * block);
        foreach (bool half in new[] { false, true })
        {
            for (int b = 0; b < n; b++)
            {
                // Token 0 block by block in slots 0..; token 1 reading ahead in slots 8.. (in the 64-row case past the
                // count: rows the caller holds but does not attend).
                int nextRows = b + 1 < n ? Rows(b + 1) : count == block ? 10 : 0;
                if (half)
                {
                    blocks.AttendRows(0, b, bf16.AsSpan(b * block * stride, Rows(b) * stride), Rows(b), 0.07f);
                    blocks.AttendRows(1, 8 + b, bf16.AsSpan(b * block * stride, Rows(b) * stride), Rows(b), 0.07f,
                        next: bf16.AsSpan((b + 1) * block * stride, nextRows * stride), fetched: b > 0);
                }
                else
                {
                    blocks.AttendRows(0, b, rows.AsSpan(b * block * stride, Rows(b) * stride), Rows(b), 0.07f);
                    blocks.AttendRows(1, 8 + b, rows.AsSpan(b * block * stride, Rows(b) * stride), Rows(b), 0.07f,
                        next: rows.AsSpan((b + 1) * block * stride, nextRows * stride), fetched: b > 0);
                }
            }
            for (int h = 0; h < heads; h++)
            {
                blocks.Merge(0, n, h, 0);
                blocks.Merge(8, n, h, 1);
                ReadOnlySpan<float> both = blocks.Latents(h, 2);
                Assert.True(both[..c].SequenceEqual(both[c..]), $"head {h}, {(half ? "bf16" : "f32")} rows");
            }
        }
    }

    /// <summary>Blocks whose heads are attended in parts (as decode splits a short context's few blocks over the
    /// threads) hold the bits of the blocks attended whole, in f32 and bf16 rows: two blocks merged, so each block's
    /// max, sum and output all count.</summary>
    [Theory]
    [InlineData(20, 128, 2)] // five groups of four heads: parts of two and three groups
    [InlineData(20, 101, 5)] // a group a part; a short second block
    [InlineData(18, 70, 3)]  // padded heads in the last part
    public void AbsorbedBlocks_AttendedInHeadParts_HoldTheWholeBlocksBits(int heads, int count, int parts)
    {
        const int c = 512, r = 64, stride = c + r, block = LatentAttention.BlockPositions;
        var blocks = AbsorbedBlocks.For(heads, c, r, 256);
        if (blocks is null) return; // no blocked path on this CPU
        Assert.Equal((heads + 3) / 4, blocks.HeadParts);
        // Decode's split: whole blocks on one thread or where they give every thread four; else parts, at most a group each.
        Assert.Equal((1, 1, 1), (blocks.PartsFor(1, 1), blocks.PartsFor(8, 2), blocks.PartsFor(9, 2)));
        Assert.Equal((2, 3, blocks.HeadParts), (blocks.PartsFor(4, 2), blocks.PartsFor(3, 2), blocks.PartsFor(1, 64)));
        var rng = new Random(heads + count + parts);
        float[] rows = Random(rng, count * stride);
        for (int i = 0; i < block * stride; i++) rows[i] *= 3; // the blocks' max scores apart
        ushort[] bf16 = [.. rows.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))];
        for (int h = 0; h < heads; h++)
        {
            float[] q = Random(rng, stride);
            q.CopyTo(blocks.Query(0, h));
            q.CopyTo(blocks.Query(1, h));
        }
        foreach (bool half in new[] { false, true })
        {
            // Token 0 whole in slots 0 and 1, token 1 in parts (the last part first) in slots 2 and 3; the same queries.
            for (int b = 0; b < 2; b++)
            {
                int s0 = b * block, n = Math.Min(block, count - s0);
                if (half) blocks.AttendRows(0, b, bf16.AsSpan(s0 * stride), n, 0.07f);
                else blocks.AttendRows(0, b, rows.AsSpan(s0 * stride), n, 0.07f);
                for (int part = parts - 1; part >= 0; part--)
                    if (half) blocks.AttendRows(1, 2 + b, bf16.AsSpan(s0 * stride), n, 0.07f, part, parts);
                    else blocks.AttendRows(1, 2 + b, rows.AsSpan(s0 * stride), n, 0.07f, part, parts);
            }
            for (int h = 0; h < heads; h++)
            {
                blocks.Merge(0, 2, h, 0);
                blocks.Merge(2, 2, h, 1);
                ReadOnlySpan<float> both = blocks.Latents(h, 2);
                Assert.True(both[..c].SequenceEqual(both[c..]), $"head {h}, {(half ? "bf16" : "f32")} rows");
            }
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => blocks.AttendRows(0, 0, rows, block, 0.07f, 0, blocks.HeadParts + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => blocks.AttendRows(0, 0, rows, block, 0.07f, parts, parts));
    }

    [Theory]
    [InlineData(16, 64)] // V2-Lite's heads: four groups, sixteen 4-position tiles
    [InlineData(8, 63)]  // two groups; fifteen tiles and three positions one at a time
    [InlineData(12, 50)] // three groups; 256-bit: sixteen passes of three positions and two one at a time
    public void AbsorbedBlock_Scores_AreSixteenLaneSumsInTheFixedOrder_BitForBit(int heads, int count)
    {
        const int c = 512, r = 64, stride = c + r;
        if (!LatentAttention.HasBlockedAbsorbed(c, r)) return;
        var rng = new Random(heads + count);
        float[] cache = Random(rng, count * stride), queries = Random(rng, heads * stride);
        float[] partial = new float[heads * c], max = new float[heads], sum = new float[heads];
        const float scale = 0.07f;
        LatentAttention.AbsorbedBlock(heads / 4, queries, cache.AsSpan(0, count * stride), count, c, r, scale, partial, max, sum);
        // The specification: lane l of a head's sum over a row takes every 16th product from l on, each a fused
        // multiply-add; the lanes are added halves (i + (i + 8)), then quarters (i + (i + 4)), then (0 + 2) + (1 + 3).
        var lanes = new float[16];
        for (int h = 0; h < heads; h++)
        {
            float best = float.NegativeInfinity;
            for (int s = 0; s < count; s++)
            {
                Array.Clear(lanes);
                for (int d = 0; d < stride; d++)
                    lanes[d % 16] = MathF.FusedMultiplyAdd(cache[s * stride + d], queries[h * stride + d], lanes[d % 16]);
                for (int i = 0; i < 8; i++) lanes[i] += lanes[i + 8];
                for (int i = 0; i < 4; i++) lanes[i] += lanes[i + 4];
                best = MathF.Max(best, ((lanes[0] + lanes[2]) + (lanes[1] + lanes[3])) * scale);
            }
            Assert.Equal(BitConverter.SingleToInt32Bits(best), BitConverter.SingleToInt32Bits(max[h]));
        }
    }

    [Theory]
    [InlineData(0, 1, 16, 8, 16)]
    [InlineData(0, 13, 12, 4, 20)]   // dimensions off the vector width, a short last group of queries
    [InlineData(37, 6, 128, 64, 128)] // V2-Lite's head shape after a cached prefix; the span crosses a 32-position tile
    [InlineData(3, 7, 128, 64, 128)]  // 128-wide values (kept in registers): a last query without a partner
    [InlineData(5, 40, 16, 8, 33)]
    public void ExpandedQueries_GiveEveryQueryWhatExpandedGivesIt(int pos0, int n, int nope, int rope, int v)
    {
        if (!LatentAttention.HasBlockedPath) return;
        const int heads = 3, h = 1, width = 40; // cache rows [c_kv (40 - rope) | k_pe]
        int span = pos0 + n, qk = nope + rope, kvStride = heads * (nope + v), cacheStride = width + rope;
        var rng = new Random(pos0 * 100 + n);
        float[] q = Random(rng, n * heads * qk, 2f), kv = Random(rng, span * kvStride), cache = Random(rng, span * cacheStride);
        var blocked = new float[n * heads * v];
        LatentAttention.ExpandedQueries(q.AsSpan(h * qk), heads * qk, n, pos0, nope, rope, v, kv, kvStride, h * (nope + v),
            cache, cacheStride, 0.3f, blocked.AsSpan(h * v), heads * v);
        for (int t = 0; t < n; t++)
        {
            var one = new float[v];
            int count = pos0 + t + 1;
            LatentAttention.Expanded(q.AsSpan((t * heads + h) * qk, nope), q.AsSpan((t * heads + h) * qk + nope, rope), kv, kvStride,
                h * (nope + v), cache, cacheStride, count, 0.3f, new float[count], one);
            for (int i = 0; i < v; i++) Assert.Equal(one[i], blocked[(t * heads + h) * v + i], 1e-5);
        }
        for (int t = 0; t < n; t++) // other heads' outputs are left alone
            Assert.All(blocked.AsSpan((t * heads) * v, v).ToArray(), x => Assert.Equal(0f, x));
    }
}
