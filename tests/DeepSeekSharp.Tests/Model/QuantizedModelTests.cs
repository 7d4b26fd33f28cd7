using DeepSeekSharp.Linear;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using Xunit.Abstractions;

namespace DeepSeekSharp.Tests.Model;

/// <summary>Quantised weights against the float32 logits of the same checkpoint.</summary>
public class QuantizedModelTests(ITestOutputHelper output)
{
    private static string DenseDir => RandomModel.Dense(5);

    private static readonly int[] Prompt = [1, 17, 256, 999, 42, 7, 300, 5];

    private (double MaxRel, int Top1) Measure(WeightFormat format)
    {
        using DeepSeekModel reference = DeepSeekModel.Load(DenseDir);
        using DeepSeekModel quantized = DeepSeekModel.Load(DenseDir, new LoadOptions { Quantize = format });
        Assert.All(quantized.Weights.AllMatrices(), m => Assert.Equal(format.Traits().CanHold(m.Cols) ? format : WeightFormat.Q8_0, m.Format));
        using InferenceSession a = reference.CreateSession(16), b = quantized.CreateSession(16);
        float[] la = a.Forward(Prompt), lb = b.Forward(Prompt);
        double worst = 0;
        int top1 = 0, v = 1000;
        for (int p = 0; p < Prompt.Length; p++)
        {
            worst = Math.Max(worst, Compare.MaxRelative(lb.AsSpan(p * v, v), la.AsSpan(p * v, v)));
            if (IndexOfMax(la.AsSpan(p * v, v)) == IndexOfMax(lb.AsSpan(p * v, v))) top1++;
        }
        output.WriteLine($"{format}: max rel err {worst:E2}, top-1 {top1}/{Prompt.Length}");
        return (worst, top1);
    }

    private static int IndexOfMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    [Fact]
    public void Bf16_StaysWithinOnePercentOfF32() => Assert.True(Measure(WeightFormat.BF16).MaxRel < 1e-2);

    // Bounds below are the measured figures (BF16 0.58%, Q8_0 2.3%, Q4_K 23–29%, Q4_0 25% of max |logit| on this random dense
    // model — a max over 8 positions of a random network, so it moves with any change to rounding) with margin;
    // they catch a broken kernel or quantiser (errors of order 1), not drift.
    [Fact]
    public void Q8_0_StaysWithinThreePercentOfF32_SameTopToken()
    {
        var (maxRel, top1) = Measure(WeightFormat.Q8_0);
        Assert.True(maxRel < 3e-2, $"{maxRel}");
        Assert.Equal(Prompt.Length, top1);
    }

    [Fact]
    public void Q4_0_StaysWithinThirtyFivePercentOfF32()
    {
        var (maxRel, _) = Measure(WeightFormat.Q4_0);
        Assert.True(maxRel < 0.35, $"{maxRel}");
    }

    [Fact]
    public void Q4K_StaysWithinThirtyPercentOfF32()
    {
        var (maxRel, _) = Measure(WeightFormat.Q4_K);
        Assert.True(maxRel < 0.3, $"{maxRel}");
    }

    [Fact]
    public void MemoryMappedBf16_GivesTheSameLogitsAsAnonymousMemory()
    {
        using DeepSeekModel a = DeepSeekModel.Load(GoldenCase.DataPath("v3-tiny"));
        using DeepSeekModel b = DeepSeekModel.Load(GoldenCase.DataPath("v3-tiny"), new LoadOptions { MemoryMap = true });
        using InferenceSession sa = a.CreateSession(16), sb = b.CreateSession(16);
        GoldenCase g = GoldenCase.Load("v3-tiny");
        Assert.Equal(sa.Forward(g.PromptIds), sb.Forward(g.PromptIds));
    }

    [Fact]
    public void ThreadCount_DoesNotChangeLogitsByOneBit()
    {
        using DeepSeekModel m = DeepSeekModel.Load(DenseDir, new LoadOptions { Quantize = WeightFormat.Q8_0 });
        // A 70-token prefill (expanded attention), then three decode steps (absorbed attention over two blocks of
        // positions, which threads share).
        int[] prompt = [.. Enumerable.Range(0, 70).Select(i => (Prompt[i % Prompt.Length] + 13 * i) % 1000)];
        Assert.Equal(PrefillAndDecode(m, prompt, 1), PrefillAndDecode(m, prompt, 2));
        Assert.Equal(PrefillAndDecode(m, prompt, 1), PrefillAndDecode(m, prompt, 3));
    }

    [Fact]
    public void TwelveHeads_DecodedWithEachBlocksHeadsInParts_GiveTheBitsOfOneThread()
    {
        // Decode 71 to 78 positions deep is two blocks: two and three threads attend each block's three groups of
        // four heads a group a part, one thread whole; the pass of five tokens (ten blocks) on three threads in two
        // parts of one and two groups.
        ModelConfig c = RandomCheckpoint.Preset("v2-lite-tiny") with
        {
            VocabSize = 1000, Dim = 128, NHeads = 12, KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32,
        };
        string dir = Path.Combine(TestScratch.Root, "dss-heads-" + Guid.NewGuid().ToString("N"));
        try
        {
            RandomCheckpoint.Create(c, dir, WeightFormat.BF16, seed: 4);
            using DeepSeekModel m = DeepSeekModel.Load(dir);
            int[] prompt = [.. Enumerable.Range(0, 70).Select(i => (11 * i + 2) % 1000)];
            AssertFiniteAndTheSameOnOneTwoAndThreeThreads(m, prompt);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    /// <summary>The logits of a prefill of <paramref name="prompt"/>, three decode steps and a step of five tokens (as
    /// a pass verifying drafts is) on a pool of <paramref name="threads"/> threads.</summary>
    private static float[] PrefillAndDecode(DeepSeekModel m, int[] prompt, int threads)
    {
        using var pool = new DeepSeekSharp.Kernels.WorkerPool(threads);
        using var scope = DeepSeekSharp.Kernels.WorkerPool.Use(pool);
        using InferenceSession s = m.CreateSession(96);
        var all = new List<float>(s.Forward(prompt));
        foreach (int token in new[] { 3, 14, 15 }) all.AddRange(s.Forward([token]));
        all.AddRange(s.Forward([9, 2, 6, 5, 3]));
        return [.. all];
    }

    /// <summary>Every logit of <see cref="PrefillAndDecode"/> finite, and the same bits on 1, 2 and 3 threads.</summary>
    private static void AssertFiniteAndTheSameOnOneTwoAndThreeThreads(DeepSeekModel m, int[] prompt)
    {
        float[] one = PrefillAndDecode(m, prompt, 1);
        Assert.All(one, v => Assert.True(float.IsFinite(v)));
        Assert.Equal(one, PrefillAndDecode(m, prompt, 2));
        Assert.Equal(one, PrefillAndDecode(m, prompt, 3));
    }

    [Fact]
    public void DecodedTokensExperts_SplitByRowsOnTwoThreads_GiveTheBitsOfWholeExpertsOnOne()
    {
        // Experts 640 wide: the shared expert and the first routed ones cut in parts of 512 + 128 rows, the last two in
        // parts of 128; down projections of 256 rows whole or halved. One thread takes whole experts, more take parts
        // (for a decoded token and for a step of five, each expert's rows over all its tokens).
        ModelConfig c = RandomCheckpoint.Preset("v3-tiny") with
        {
            VocabSize = 1000, Dim = 256, InterDim = 512, MoeInterDim = 640, QLoraRank = 64, KvLoraRank = 64,
        };
        string dir = Path.Combine(TestScratch.Root, "dss-parts-" + Guid.NewGuid().ToString("N"));
        string unshared = dir + "-unshared";
        try
        {
            RandomCheckpoint.Create(c, dir, WeightFormat.BF16, seed: 9);
            RandomCheckpoint.Create(c with { NSharedExperts = 0 }, unshared, WeightFormat.BF16, seed: 9); // routed experts only
            int[] prompt = [.. Enumerable.Range(0, 12).Select(i => (37 * i + 5) % 1000)];
            foreach ((string path, WeightFormat? format) in new (string, WeightFormat?)[]
                     { (dir, null), (dir, WeightFormat.Q8_0), (dir, WeightFormat.Q4_K), (unshared, WeightFormat.Q8_0) })
            {
                using DeepSeekModel m = DeepSeekModel.Load(path, new LoadOptions { Quantize = format });
                Assert.Equal(path == dir, m.Weights.Blocks.Any(b => b.Ffn is MoeWeights { Shared: not null }));
                AssertFiniteAndTheSameOnOneTwoAndThreeThreads(m, prompt);
            }
        }
        finally
        {
            foreach (string d in new[] { dir, unshared })
                if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    [Theory]
    [InlineData("v3-tiny", 10)]
    [InlineData("v2-lite-tiny", 11)]
    [InlineData("v2-grouped-tiny", 11)]
    [InlineData("v3-fp8-tiny", 11)]
    public void Q8_0_OnGoldenCases_KeepsTheTopTokenAtMostPositions(string name, int minTop1)
    {
        // These tiny random MoE models sit within 1e-3 of routing ties; 8-bit weights flip some expert choices, which
        // moves logits far more than the weights themselves (measured max rel err: v3-tiny 0.41, v2-lite-tiny 0.023,
        // v2-grouped-tiny 0.55, v3-fp8-tiny 0.040). The top token is the stable figure: 11 or 12 of 12, v3-tiny 10
        // (11 while codes rounded halves to even; ggml's roundf, halves away from zero, flips one more routing).
        GoldenCase g = GoldenCase.Load(name);
        using DeepSeekModel m = DeepSeekModel.Load(g.Directory, new LoadOptions { Quantize = WeightFormat.Q8_0 });
        using InferenceSession s = m.CreateSession();
        float[] logits = s.Forward(g.PromptIds);
        int v = m.Config.VocabSize, agree = 0;
        for (int p = 0; p < g.PromptIds.Length; p++)
            if (IndexOfMax(logits.AsSpan(p * v, v)) == IndexOfMax(g.PerPositionLogits[p])) agree++;
        Assert.True(agree >= minTop1, $"{name}: top-1 agreement {agree}/12");
    }

    [Theory]
    [InlineData("v3-fp8-tiny", WeightFormat.FP8)]
    [InlineData("v2-grouped-tiny", WeightFormat.F16)]
    [InlineData("v3-tiny", WeightFormat.BF16)]
    [InlineData("v2-lite-tiny", WeightFormat.F32)]
    public void StoredFormats_StayAsStored_ByDefault_AndInPlace(string name, WeightFormat stored)
    {
        GoldenCase g = GoldenCase.Load(name);
        foreach (bool mmap in new[] { false, true })
        {
            using DeepSeekModel m = DeepSeekModel.Load(g.Directory, new LoadOptions { MemoryMap = mmap });
            Assert.Contains(m.Weights.AllMatrices(), x => x.Format == stored);
            using InferenceSession s = m.CreateSession();
            Compare.Close(s.Forward(g.PromptIds).AsSpan((g.PromptIds.Length - 1) * m.Config.VocabSize), g.PrefillLastLogits, 1e-4, $"{name} mmap={mmap}");
        }
    }

    [Fact]
    public void Fp8Weights_TakeOneBytePerWeight()
    {
        using DeepSeekModel m = DeepSeekModel.Load(GoldenCase.DataPath("v3-fp8-tiny"));
        Matrix qa = ((QProjection.LowRank)m.Weights.Blocks[0].Attn.Q).WqA;
        Assert.Equal(WeightFormat.FP8, qa.Format);
        Assert.Equal((long)qa.Rows * qa.Cols, qa.Bytes);
    }

    /// <summary>Absorbed MLA's transposed W_UK made from an FP8 kv_b_proj whose heads are whole 128 × 128 blocks stays
    /// FP8 at one byte a weight — whichever layout kv_b_proj is kept in (quads with AVX-512, the file layout without) —
    /// and holds exactly kv_b_proj's k_nope values, transposed (a float32 copy read four bytes a weight every step).</summary>
    [Fact]
    public void Fp8KvB_GivesAnFp8TransposedWk_HoldingTheSameValues()
    {
        ModelConfig c = RandomCheckpoint.Preset("v3-tiny") with { QkNopeHeadDim = 128, VHeadDim = 128, KvLoraRank = 128 };
        string dir = Path.Combine(TestScratch.Root, "dss-fp8-wk-" + Guid.NewGuid().ToString("N"));
        try
        {
            RandomCheckpoint.Create(c, dir, WeightFormat.FP8, seed: 5);
            using DeepSeekModel m = DeepSeekModel.Load(dir);
            int nope = c.QkNopeHeadDim, rank = c.KvLoraRank, headRows = nope + c.VHeadDim;
            var kvB = new float[c.NHeads * headRows * rank];
            var row = new float[nope];
            foreach (BlockWeights block in m.Weights.Blocks)
            {
                Matrix wkT = block.Attn.WkT, wkvB = block.Attn.WkvB;
                Assert.Equal(WeightFormat.FP8, wkvB.Format);
                Assert.Equal(WeightFormat.FP8, wkT.Format);
                Assert.Equal((c.NHeads * rank, nope), (wkT.Rows, wkT.Cols));
                Assert.Equal((long)wkT.Rows * wkT.Cols, wkT.Bytes);
                for (int r = 0; r < wkvB.Rows; r++) wkvB.DequantizeRow(r, kvB.AsSpan(r * rank, rank));
                for (int h = 0; h < c.NHeads; h++)
                    for (int cc = 0; cc < rank; cc++)
                    {
                        wkT.DequantizeRow(h * rank + cc, row);
                        for (int d = 0; d < nope; d++)
                            Assert.Equal(BitConverter.SingleToInt32Bits(kvB[(h * headRows + d) * rank + cc]), BitConverter.SingleToInt32Bits(row[d]));
                    }
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void RandomFp8Checkpoint_HoldsE4M3ProjectionsWithTileScales_CloseToTheSameSeedInFloat32_AndThreadCountInvariant()
    {
        // Projections 320 and 200 wide: whole 128 × 128 tiles and cut ones.
        ModelConfig c = RandomCheckpoint.Preset("v3-tiny") with { Dim = 200, InterDim = 320, MoeInterDim = 64, QLoraRank = 96, KvLoraRank = 64 };
        string fp8 = Path.Combine(TestScratch.Root, "dss-fp8-" + Guid.NewGuid().ToString("N"));
        string f32 = Path.Combine(TestScratch.Root, "dss-f32-" + Guid.NewGuid().ToString("N"));
        try
        {
            // Shards of at most 4 KB: most weights fill a shard alone, so their scales open the next one.
            RandomCheckpoint.Create(c, fp8, WeightFormat.FP8, seed: 3, maxShardBytes: 1 << 12);
            Assert.True(Directory.GetFiles(fp8, "*.safetensors").Length > 20);
            RandomCheckpoint.Create(c, f32, WeightFormat.F32, seed: 3);
            Assert.Equal((128, 128), DeepSeekSharp.Formats.HfConfig.Load(fp8).Fp8BlockSize);
            using DeepSeekModel q = DeepSeekModel.Load(fp8), r = DeepSeekModel.Load(f32);
            Matrix[] qs = q.Weights.AllMatrices().ToArray(), rs = r.Weights.AllMatrices().ToArray();
            Assert.Equal(rs.Length, qs.Length);
            int fp8Matrices = 0;
            for (int i = 0; i < qs.Length; i++)
            {
                Assert.Equal((rs[i].Rows, rs[i].Cols), (qs[i].Rows, qs[i].Cols));
                if (qs[i].Format != WeightFormat.FP8) continue;
                fp8Matrices++;
                var a = new float[qs[i].Cols];
                var b = new float[qs[i].Cols];
                for (int row = 0; row < qs[i].Rows; row++)
                {
                    qs[i].DequantizeRow(row, a);
                    rs[i].DequantizeRow(row, b);
                    float largest = b.Max(Math.Abs);
                    for (int k = 0; k < a.Length; k++)
                        Assert.True(Math.Abs(a[k] - b[k]) <= Math.Abs(b[k]) / 16 + largest / 448 / 256, $"matrix {i} [{row}, {k}]: {a[k]} for {b[k]}");
                }
            }
            Assert.True(fp8Matrices > 20, $"{fp8Matrices} FP8 matrices");
            Assert.Equal(WeightFormat.BF16, q.Weights.Head.Format);
            // Prefill of 70 tokens (four tokens share each widened code), then decode steps: every logit finite, and the
            // same bits on 1, 2 and 3 threads.
            int[] prompt = [.. Enumerable.Range(0, 70).Select(i => (7 * i + 3) % 1000)];
            AssertFiniteAndTheSameOnOneTwoAndThreeThreads(q, prompt);
        }
        finally
        {
            foreach (string dir in new[] { fp8, f32 })
                if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
