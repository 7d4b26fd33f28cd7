using DeepSeekSharp.Inference;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Model;

/// <summary>A bfloat16 latent cache: half the bytes, every value rounded to nearest even as it is written, every
/// attention path reading the same rounded rows (so decoding tokens together still gives each its one-step bits), and
/// logits close to a float32 cache's.</summary>
public class Bf16CacheTests
{
    [Fact]
    public void Rows_AreRoundedToNearestEven_InHalfTheBytes()
    {
        var f32 = new LatentKvCache(2, 40, 8);
        var bf16 = new LatentKvCache(2, 40, 8, LatentCacheFormat.BF16);
        Assert.Equal(f32.BytesPerToken / 2, bf16.BytesPerToken);
        var rng = new Random(3);
        float[] rows = [.. Enumerable.Range(0, 3 * 40).Select(_ => (float)(rng.NextDouble() - 0.5) * 1e3f)];
        rows[5] = 1 + 1f / 256; // exactly halfway between two bfloat16 values: to the even one, 1
        rows[6] = 1 + 3f / 256; // halfway again: up, to the even 1 + 1/64
        bf16.WriteRows(1, 2, rows);
        var back = new float[rows.Length];
        bf16.ReadRows(1, 2, back);
        for (int i = 0; i < rows.Length; i++) Assert.Equal(NumberFormats.BF16ToFloat(NumberFormats.FloatToBF16(rows[i])), back[i]);
        Assert.Equal(1f, back[5]);
        Assert.Equal(1 + 1f / 64, back[6]);
        Assert.NotEqual(rows, back);
        Assert.Throws<InvalidOperationException>(() => bf16.Layer(0));
        f32.WriteRows(1, 2, rows);
        f32.ReadRows(1, 2, back);
        Assert.Equal(rows, back);
    }

    [Fact]
    public void Widen_GivesEveryValueOnAwkwardLengths()
    {
        foreach (int n in new[] { 1, 15, 16, 17, 33, 576 })
        {
            ushort[] bits = [.. Enumerable.Range(0, n).Select(i => (ushort)(i * 2654435761u >> 16))];
            var wide = new float[n];
            NumberFormats.BF16ToFloat(bits, wide);
            for (int i = 0; i < n; i++) Assert.Equal(BitConverter.SingleToInt32Bits(NumberFormats.BF16ToFloat(bits[i])), BitConverter.SingleToInt32Bits(wide[i]));
        }
    }

    /// <summary>The blocked absorbed kernel widening bfloat16 rows as it loads them gives the bits it gives on the
    /// same rows widened first (V2-Lite's widths; a short block and a full one).</summary>
    [Theory]
    [InlineData(16, 37)]
    [InlineData(16, 64)]
    [InlineData(8, 5)]
    public void BlockedAttention_OverBf16Rows_EqualsItOverTheRowsWidened(int heads, int count)
    {
        const int c = 512, r = 64, stride = c + r;
        if (!DeepSeekSharp.Kernels.LatentAttention.HasBlockedAbsorbed(c, r)) return;
        var rng = new Random(heads + count);
        ushort[] bits = [.. Enumerable.Range(0, count * stride).Select(_ => NumberFormats.FloatToBF16((float)(rng.NextDouble() - 0.5)))];
        var wide = new float[bits.Length];
        NumberFormats.BF16ToFloat(bits, wide);
        float[] queries = [.. Enumerable.Range(0, heads * stride).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.2f)];
        float[] Run(bool bf16, out float[] max, out float[] sum)
        {
            var partial = new float[heads * c];
            max = new float[heads];
            sum = new float[heads];
            if (bf16) DeepSeekSharp.Kernels.LatentAttention.AbsorbedBlockBf16(heads / 4, queries, bits, count, c, r, 0.07f, partial, max, sum);
            else DeepSeekSharp.Kernels.LatentAttention.AbsorbedBlock(heads / 4, queries, wide, count, c, r, 0.07f, partial, max, sum);
            return partial;
        }
        Assert.Equal(Run(false, out float[] m1, out float[] s1), Run(true, out float[] m2, out float[] s2));
        Assert.Equal(m1, m2);
        Assert.Equal(s1, s2);
    }

    /// <summary>The shipped r1-tiny model (trained) and the golden V2-Lite-shaped one (its heads attend one at a time,
    /// not in blocks): a 40-token prompt, then 40 greedy steps, float32 cache against bfloat16. The rounding moves
    /// logits by a little (at most 0.25% of their spread in these runs; 2% allowed) but really changes them.</summary>
    [Theory]
    [InlineData("r1-tiny")]
    [InlineData("v2-lite-tiny")]
    public void Logits_StayCloseToAFloat32Cache(string name)
    {
        string path = name == "r1-tiny" ? Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny") : GoldenCase.DataPath(name);
        using DeepSeekModel f32 = DeepSeekModel.Load(path);
        using DeepSeekModel bf16 = DeepSeekModel.Load(path, new LoadOptions { CacheFormat = LatentCacheFormat.BF16 });
        Assert.Equal(LatentCacheFormat.BF16, bf16.CacheFormat);
        int vocab = f32.Config.VocabSize;
        var rng = new Random(5);
        int[] prompt = [.. Enumerable.Range(0, 40).Select(_ => rng.Next(2, vocab))];
        using InferenceSession a = f32.CreateSession(128), b = bf16.CreateSession(128);
        Assert.Equal(LatentCacheFormat.BF16, b.Cache.Format);
        float[] la = new float[vocab], lb = new float[vocab];
        a.Forward(prompt, la, allPositions: false);
        b.Forward(prompt, lb, allPositions: false);
        double worst = 0;
        bool differs = false;
        int[] one = [0];
        for (int step = 0; ; step++)
        {
            float spread = la.Max() - la.Min();
            for (int v = 0; v < vocab; v++)
            {
                worst = Math.Max(worst, Math.Abs(la[v] - lb[v]) / spread);
                differs |= la[v] != lb[v];
            }
            if (step == 40) break;
            one[0] = DeepSeekSharp.Kernels.TopK.ArgMax(la); // both follow the float32 run's tokens
            a.Forward(one, la, decoding: true);
            b.Forward(one, lb, decoding: true);
        }
        Assert.True(differs, "a bfloat16 cache gave the float32 cache's logits exactly: nothing was rounded");
        Assert.True(worst < 0.02, $"{name}: a logit moved by {worst:P2} of the logits' spread");
    }

    [Theory]
    [InlineData("v3-tiny")]
    [InlineData("v2-lite-tiny")]
    public void SeveralTokensInOnePass_GetTheBitsOfOneStepEach(string name)
    {
        using DeepSeekModel m = DeepSeekModel.Load(GoldenCase.DataPath(name), new LoadOptions { CacheFormat = LatentCacheFormat.BF16 });
        DecodeTogetherTests.AssertTogetherAsAlone(m, name + " bf16", [5, 70], capacity: 128);
    }

    [Fact]
    public void PrefixCache_WarmIsBitIdenticalToCold_AndNeverMixesCacheFormats()
    {
        using DeepSeekModel f32 = DeepSeekModel.Load(RandomModel.V3Tiny);
        using DeepSeekModel bf16 = DeepSeekModel.Load(RandomModel.V3Tiny, new LoadOptions { CacheFormat = LatentCacheFormat.BF16 });
        Assert.NotEqual(PrefixCache.ModelIdentity(f32), PrefixCache.ModelIdentity(bf16));
        long budget = 8L * PrefixCache.DefaultBlockSize * bf16.Config.NLayers * bf16.Config.LatentCacheWidth * sizeof(float);
        using var cache = PrefixCache.For(bf16, budget);
        var rng = new Rng(7);
        int[] prompt = [.. Enumerable.Range(0, 150).Select(_ => 2 + (int)(rng.NextUInt64() % 100000))];
        float[] Prefill(bool useCache, out int restored)
        {
            using InferenceSession s = bf16.CreateSession(256);
            restored = useCache ? cache.Restore(prompt, prompt.Length - 1, s.Cache, null) : 0;
            var logits = new float[bf16.Config.VocabSize];
            s.Forward(prompt.AsSpan(restored), logits, allPositions: false);
            if (useCache) cache.Store(prompt, prompt.Length, s.Cache, null);
            return logits;
        }
        float[] cold = Prefill(false, out _);
        Prefill(true, out int first);
        float[] warm = Prefill(true, out int restored);
        Assert.Equal(0, first);
        Assert.Equal(128, restored);
        Assert.Equal(cold, warm);
    }

    /// <summary>Every layer's rows start on a 64-byte boundary in both formats, as do the blocked attention's queries:
    /// V2-Lite's rows (576 values) are whole cache lines, so no 512-bit load of a row splits two lines.</summary>
    [Fact]
    public unsafe void CacheRowsAndQueries_StartOn64ByteBoundaries()
    {
        foreach (LatentCacheFormat format in new[] { LatentCacheFormat.F32, LatentCacheFormat.BF16 })
        {
            var cache = new LatentKvCache(3, 576, 100, format);
            for (int l = 0; l < 3; l++)
                if (format == LatentCacheFormat.F32) fixed (float* p = cache.Layer(l)) Assert.Equal(0, (nint)p % 64);
                else fixed (ushort* p = cache.Bf16Layer(l)) Assert.Equal(0, (nint)p % 64);
        }
        var blocks = DeepSeekSharp.Kernels.AbsorbedBlocks.For(16, 512, 64, 256);
        if (blocks is null) return; // no blocked path on this CPU
        fixed (float* q = blocks.Query(0, 0)) Assert.Equal(0, (nint)q % 64);
        fixed (float* q = blocks.Query(3, 5)) Assert.Equal(0, (nint)q % 64);
    }
}
