using DeepSeekSharp.Linear;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Tests.Model;

/// <summary>Decoding several tokens in one pass (a speculative verification: absorbed attention over the cache, the
/// queries of all the tokens folded into the latent space by one product per head and their latents projected back
/// by another) gives every token the bits it gets decoded alone, one step at a time.</summary>
public class DecodeTogetherTests
{
    /// <summary>The golden models as stored and quantised (their attention matrices in F32, Q8_0 and Q4_K), the FP8
    /// one (latent rank 64), and V2-Lite's shape (its rope width takes the one-head-at-a-time path).</summary>
    public static TheoryData<string> Models => ["v3-tiny", "v3-tiny:q8_0", "v3-tiny:q4_k", "v3-fp8-tiny", "v2-lite-tiny"];

    private static DeepSeekModel Load(string name)
    {
        string[] parts = name.Split(':');
        return ModelCache.Get(GoldenCase.DataPath(parts[0]), parts.Length < 2 ? null : parts[1] == "q8_0" ? WeightFormat.Q8_0 : WeightFormat.Q4_K);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void SeveralTokensInOnePass_GetTheBitsOfOneStepEach(string name) =>
        // Prompts of 5 and 70 tokens: the second pass's attention crosses a block of cached positions (64).
        AssertTogetherAsAlone(Load(name), name, [5, 70], capacity: 128);

    /// <summary>300 positions deep, eight tokens need five blocks each, more than the 32 slots block results are kept
    /// in: the tokens attend in turns, and still get their own bits. (The golden models stop at 128 positions, so a
    /// copy of v3-tiny allows 512.)</summary>
    [Theory]
    [InlineData(null)]
    [InlineData(WeightFormat.Q4_K)]
    public void TokensWhoseBlocksOutnumberTheSlots_AttendInTurns_AndGetTheBitsOfOneStepEach(WeightFormat? quantize)
    {
        using TempDir dir = TempDir.CopyOf("v3-tiny");
        using DeepSeekModel m = LoadAllowing(dir, 512, quantize);
        ModelConfig c = m.Config; // the slots counted on above, where the CPU has the blocked path
        Assert.Equal(32, DeepSeekSharp.Kernels.AbsorbedBlocks.For(c.NHeads, c.KvLoraRank, c.QkRopeHeadDim, 320)?.Slots ?? 32);
        AssertTogetherAsAlone(m, $"v3-tiny {quantize}", [300], capacity: 320);
    }

    /// <summary>Where a block's heads go in one part, decode's threads attend runs of consecutive blocks, each block's
    /// rows read ahead while the one before it is multiplied, and a run's last reads ahead the first block of the run
    /// the thread will likely take next. Eight tokens 250 deep need 34 blocks (six of four, two of five), all in one
    /// turn where the slots are sized for 2,200 positions: on one thread they attend in runs of two, one of them
    /// crossing from token 6's last block to token 7's first; on three, single blocks with the next one guessed. Either
    /// way every token gets the bits it gets decoded alone, and the same bits on one thread as on three.</summary>
    [Fact]
    public void RunsOfBlocksReadAhead_GiveEveryTokenItsOwnBits_OnAnyThreadCount()
    {
        using TempDir dir = TempDir.CopyOf("v3-tiny");
        using DeepSeekModel m = LoadAllowing(dir, 2304);
        ModelConfig c = m.Config;
        Assert.Equal(35, DeepSeekSharp.Kernels.AbsorbedBlocks.For(c.NHeads, c.KvLoraRank, c.QkRopeHeadDim, 2200)?.Slots ?? 35);
        int vocab = c.VocabSize;
        var rng = new Random(7);
        int[] prompt = [.. Enumerable.Range(0, 250).Select(_ => rng.Next(2, vocab))];
        int[] tokens = [.. Enumerable.Range(0, 8).Select(_ => rng.Next(2, vocab))];
        float[]? first = null;
        foreach (int threads in new[] { 1, 3 })
        {
            using var pool = new DeepSeekSharp.Kernels.WorkerPool(threads);
            using (DeepSeekSharp.Kernels.WorkerPool.Use(pool))
            {
                AssertTogetherAsAlone(m, $"v3-tiny on {threads} thread(s)", [250], capacity: 2200);
                using InferenceSession s = m.CreateSession(2200);
                s.Forward(prompt, new float[vocab], allPositions: false);
                var all = new float[tokens.Length * vocab];
                s.Forward(tokens, all, decoding: true);
                if (first is null) first = all;
                else Assert.True(first.AsSpan().SequenceEqual(all), $"{threads} threads: the logits differ from one thread's");
            }
        }
    }

    /// <summary>4,200 positions deep (66 blocks) a token's slots hold eight blocks each, each block after a slot's first
    /// folded into it as attended (the last slot two): three tokens decoded together get the bits each gets alone, one
    /// thread and three give the same bits, and the logits agree with expanded attention over the same cache (another
    /// order of summation) within 1e-4 of their largest.</summary>
    [Fact]
    public void DeepContext_SlotsOfFoldedBlocks_GiveEachTokenItsBits_OnAnyThreadCount_AndMatchExpanded()
    {
        const int depth = 4200, capacity = 4224;
        Assert.Equal(9, DeepSeekSharp.Kernels.AbsorbedBlocks.SlotsFor(depth + 1));
        using TempDir dir = TempDir.CopyOf("v3-tiny");
        using DeepSeekModel m = LoadAllowing(dir, capacity);
        int vocab = m.Config.VocabSize;
        var rng = new Random(11);
        int[] prompt = [.. Enumerable.Range(0, depth).Select(_ => rng.Next(2, vocab))];
        int[] tokens = [.. Enumerable.Range(0, 3).Select(_ => rng.Next(2, vocab))];
        float[]? together = null;
        foreach (int threads in new[] { 1, 3 })
        {
            using var pool = new DeepSeekSharp.Kernels.WorkerPool(threads);
            using (DeepSeekSharp.Kernels.WorkerPool.Use(pool))
            {
                using InferenceSession s = m.CreateSession(capacity);
                s.Forward(prompt, new float[vocab], allPositions: false);
                var all = new float[tokens.Length * vocab];
                s.Forward(tokens, all, decoding: true);
                if (together is null) together = all;
                else Assert.True(together.AsSpan().SequenceEqual(all), $"{threads} threads: the logits differ from one thread's");
            }
        }
        using InferenceSession alone = m.CreateSession(capacity), expanded = m.CreateSession(capacity);
        expanded.Attention = AttentionMode.Expanded;
        alone.Forward(prompt, new float[vocab], allPositions: false);
        expanded.Forward(prompt, new float[vocab], allPositions: false);
        float[] one = new float[vocab], reference = new float[vocab];
        for (int t = 0; t < tokens.Length; t++)
        {
            alone.Forward(tokens.AsSpan(t, 1), one, decoding: true);
            Assert.True(together.AsSpan(t * vocab, vocab).SequenceEqual(one), $"token {t}: decoded together differs from alone");
            expanded.Forward(tokens.AsSpan(t, 1), reference);
            Compare.Close(one, reference, 1e-4, $"token {t} at {depth + t}, absorbed in folded slots against expanded");
        }
    }

    /// <summary>The copy of a golden model in <paramref name="dir"/>, its config allowing <paramref name="positions"/>
    /// positions (the golden models stop at 128).</summary>
    internal static DeepSeekModel LoadAllowing(TempDir dir, int positions, WeightFormat? quantize = null)
    {
        string config = dir.File("config.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config))!;
        json["max_position_embeddings"] = positions;
        File.WriteAllText(config, json.ToJsonString());
        return DeepSeekModel.Load(dir.Path, new LoadOptions { Quantize = quantize });
    }

    internal static void AssertTogetherAsAlone(DeepSeekModel m, string name, int[] promptLengths, int capacity)
    {
        int vocab = m.Config.VocabSize;
        var rng = new Random(name.Length);
        foreach (int promptLength in promptLengths)
        {
            int[] prompt = [.. Enumerable.Range(0, promptLength).Select(_ => rng.Next(2, vocab))];
            // 1 to 4 tokens (a pass of up to three drafts), and 10: more than one group of folded queries (8).
            foreach (int n in new[] { 1, 2, 3, 4, 10 })
            {
                int[] tokens = [.. Enumerable.Range(0, n).Select(_ => rng.Next(2, vocab))];
                using InferenceSession together = m.CreateSession(capacity), alone = m.CreateSession(capacity);
                var logits = new float[promptLength * vocab];
                together.Forward(prompt, logits, allPositions: false);
                alone.Forward(prompt, logits, allPositions: false);
                var all = new float[n * vocab];
                together.Forward(tokens, all, decoding: true);
                var one = new float[vocab];
                for (int t = 0; t < n; t++)
                {
                    alone.Forward(tokens.AsSpan(t, 1), one, decoding: true);
                    for (int v = 0; v < vocab; v++)
                        if (BitConverter.SingleToInt32Bits(one[v]) != BitConverter.SingleToInt32Bits(all[t * vocab + v]))
                            Assert.Fail($"{name}, prompt {promptLength}, {n} tokens together: token {t}'s logit {v} is {all[t * vocab + v]:R}, alone {one[v]:R}");
                }
            }
        }
    }
}
