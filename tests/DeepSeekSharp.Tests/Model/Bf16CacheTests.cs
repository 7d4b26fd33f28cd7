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

    /// <summary>The cache's bfloat16 layout: in each chunk of 32 values, value i and value 16 + i share the 32-bit word
    /// i (low and high half), so one shift or one mask widens sixteen values in order; a row's tail shorter than a
    /// chunk stays in natural order. Pack puts each rounded value where Place says, and Unpack restores the order.</summary>
    [Theory]
    [InlineData(576)] // V2-Lite / V3: eighteen chunks
    [InlineData(528)] // a rotary width of 16: sixteen values of tail
    [InlineData(40)]
    [InlineData(7)]
    public void Bf16Rows_PairValueIWithValue16PlusI_InEachChunk(int width)
    {
        if (width == 576)
            Assert.Equal(new[] { 0, 2, 30, 1, 3, 31, 32, 33, 575 },
                new[] { 0, 1, 15, 16, 17, 31, 32, 48, 575 }.Select(d => DeepSeekSharp.Kernels.Bf16Latents.Place(d, width)));
        if (width == 528) Assert.Equal((481, 512, 527), (DeepSeekSharp.Kernels.Bf16Latents.Place(496, width), DeepSeekSharp.Kernels.Bf16Latents.Place(512, width), DeepSeekSharp.Kernels.Bf16Latents.Place(527, width)));
        if (width == 40) Assert.Equal((33, 39), (DeepSeekSharp.Kernels.Bf16Latents.Place(33, width), DeepSeekSharp.Kernels.Bf16Latents.Place(39, width)));
        var rng = new Random(width);
        float[] rows = [.. Enumerable.Range(0, 3 * width).Select(_ => (float)(rng.NextDouble() - 0.5) * 100)];
        var packed = new ushort[rows.Length];
        DeepSeekSharp.Kernels.Bf16Latents.Pack(rows, packed, width);
        for (int row = 0; row < 3; row++)
            for (int d = 0; d < width; d++)
                Assert.Equal(NumberFormats.FloatToBF16(rows[row * width + d]), packed[row * width + DeepSeekSharp.Kernels.Bf16Latents.Place(d, width)]);
        if (width % 2 == 0 && width >= 32)
        {
            // The first chunk of row 1 as words: value i in the low half, value 16 + i in the high half.
            ReadOnlySpan<uint> words = System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, uint>(packed.AsSpan(width, 32));
            for (int i = 0; i < 16; i++)
                Assert.Equal(((uint)NumberFormats.FloatToBF16(rows[width + 16 + i]) << 16) | NumberFormats.FloatToBF16(rows[width + i]), words[i]);
        }
        var back = new float[rows.Length];
        DeepSeekSharp.Kernels.Bf16Latents.Unpack(packed, back, width);
        for (int i = 0; i < rows.Length; i++) Assert.Equal(NumberFormats.BF16ToFloat(NumberFormats.FloatToBF16(rows[i])), back[i]);
        Assert.Throws<ArgumentException>(() => DeepSeekSharp.Kernels.Bf16Latents.Pack(rows.AsSpan(1), packed, width));
        Assert.Throws<ArgumentOutOfRangeException>(() => DeepSeekSharp.Kernels.Bf16Latents.Place(width, width));
    }

    /// <summary>The blocked absorbed kernel widening bfloat16 rows as it loads them gives the bits it gives on the
    /// same rows widened first (V2-Lite's widths, a short block and a full one; and a rotary width of 16, whose rows end
    /// in sixteen values kept in natural order).</summary>
    [Theory]
    [InlineData(16, 37, 64)]
    [InlineData(16, 64, 64)]
    [InlineData(8, 5, 64)]
    [InlineData(12, 50, 16)]
    public void BlockedAttention_OverBf16Rows_EqualsItOverTheRowsWidened(int heads, int count, int r)
    {
        const int c = 512;
        int stride = c + r;
        if (!DeepSeekSharp.Kernels.LatentAttention.HasBlockedAbsorbed(c, r)) return;
        var rng = new Random(heads + count);
        float[] values = [.. Enumerable.Range(0, count * stride).Select(_ => (float)(rng.NextDouble() - 0.5))];
        var bits = new ushort[values.Length];
        DeepSeekSharp.Kernels.Bf16Latents.Pack(values, bits, stride);
        var wide = new float[bits.Length];
        DeepSeekSharp.Kernels.Bf16Latents.Unpack(bits, wide, stride);
        for (int i = 0; i < wide.Length; i++) Assert.Equal(NumberFormats.BF16ToFloat(NumberFormats.FloatToBF16(values[i])), wide[i]);
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
