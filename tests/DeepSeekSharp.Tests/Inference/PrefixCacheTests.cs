using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Inference;

/// <summary>The shared prefix cache: a warm prompt gives bit-identical logits and tokens to a cold one (in memory,
/// through the generator and the batch scheduler, and from disk after a "restart"), and a block file that is corrupt,
/// cut short or another model's is reported and never used.</summary>
public class PrefixCacheTests
{
    private static readonly Lazy<(DeepSeekModel Model, Tokenizer Tokenizer)> Loaded =
        new(() => (DeepSeekModel.Load(RandomModel.V3Tiny), Tokenizer.Load(RandomModel.V3Tiny)));

    private static int[] Tokens(ulong seed, int n)
    {
        var rng = new Rng(seed);
        return [.. Enumerable.Range(0, n).Select(_ => 2 + (int)(rng.NextUInt64() % 100000))];
    }

    /// <summary>The last position's logits after the prompt, restoring what the cache has first.</summary>
    private static (float[] Logits, int Restored) Prefill(DeepSeekModel model, int[] prompt, PrefixCache? cache)
    {
        using InferenceSession s = model.CreateSession(512);
        int restored = cache?.Restore(prompt, prompt.Length - 1, s.Cache, null) ?? 0;
        var logits = new float[model.Config.VocabSize];
        s.Forward(prompt.AsSpan(restored), logits, allPositions: false);
        cache?.Store(prompt, prompt.Length, s.Cache, null);
        return (logits, restored);
    }

    /// <summary>Bytes of <paramref name="blocks"/> blocks, with MTP rows or (as <see cref="Prefill"/> stores them) without.</summary>
    private static long Budget(DeepSeekModel m, int blocks, bool mtpRows = true) =>
        (long)blocks * PrefixCache.DefaultBlockSize * (m.Config.NLayers + (mtpRows ? m.MtpLayers : 0)) * m.Config.LatentCacheWidth * sizeof(float);

    [Fact]
    public void WarmPrefix_GivesBitIdenticalLogits_AndOnlyWholeBlocksOfTheSameTokens()
    {
        var (model, _) = Loaded.Value;
        using var cache = PrefixCache.For(model, Budget(model, 16));
        int[] prompt = Tokens(1, 200);
        var (cold, none) = Prefill(model, prompt, cache);
        Assert.Equal(0, none);
        var (warm, restored) = Prefill(model, prompt, cache);
        Assert.Equal(192, restored); // three blocks of 64; the rest, and always the last token, run
        Assert.Equal(cold, warm);

        int[] longer = [.. prompt, .. Tokens(2, 90)];
        var (coldLonger, _) = Prefill(model, longer, null);
        Assert.Equal(coldLonger, Prefill(model, longer, cache).Logits);
        int[] changed = (int[])prompt.Clone();
        changed[70] ^= 1; // a token in the second block: only the first block still matches
        Assert.Equal(64, cache.Probe(changed, changed.Length - 1, needMtp: false));
        Assert.Equal(Prefill(model, changed, null).Logits, Prefill(model, changed, cache).Logits);
        Assert.True(cache.Stats.HitTokens >= 192 + 192 + 64);
    }

    [Fact]
    public void OverBudget_LeastRecentlyUsedBlocksGo()
    {
        var (model, _) = Loaded.Value;
        using var cache = PrefixCache.For(model, Budget(model, 2, mtpRows: false));
        Prefill(model, Tokens(3, 140), cache); // two blocks
        Prefill(model, Tokens(4, 140), cache); // two more: the first two are evicted
        Assert.Equal(2, cache.Stats.Blocks);
        Assert.Equal(2, cache.Stats.Evictions);
        Assert.Equal(0, cache.Probe(Tokens(3, 140), 139, needMtp: false));
        Assert.Equal(128, cache.Probe(Tokens(4, 140), 139, needMtp: false));
    }

    [Fact]
    public void ABudgetSmallerThanOneBlock_IsRefusedNamingBothSizes()
    {
        var (model, _) = Loaded.Value;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => PrefixCache.For(model, Budget(model, 1) - 1));
        Assert.Contains("smaller than one block", e.Message);
    }

    [Fact]
    public void AfterARestart_BlocksComeBackFromDisk_BadFilesAreReportedAndNeverUsed()
    {
        var (model, _) = Loaded.Value;
        using var dir = new TempDir();
        int[] prompt = Tokens(5, 150);
        var (cold, _) = Prefill(model, prompt, null);
        using (var first = PrefixCache.For(model, Budget(model, 8), dir.Path)) Prefill(model, prompt, first); // Dispose flushes

        var log = new List<string>();
        using (var second = PrefixCache.For(model, Budget(model, 8), dir.Path, log: log.Add))
        {
            var (warm, restored) = Prefill(model, prompt, second);
            Assert.Equal(128, restored);
            Assert.Equal(cold, warm);
        }
        Assert.Empty(log);

        string[] files = Directory.GetFiles(dir.Path, "*.blk", SearchOption.AllDirectories);
        Assert.Equal(2, files.Length);
        byte[] bytes = File.ReadAllBytes(files[0]);
        bytes[bytes.Length / 2] ^= 0x40; // one flipped bit in the payload
        File.WriteAllBytes(files[0], bytes);
        File.WriteAllBytes(files[1], File.ReadAllBytes(files[1])[..1000]); // cut short
        File.WriteAllBytes(Path.Combine(Path.GetDirectoryName(files[0])!, "junk.blk.123.tmp"), [1, 2, 3]); // a spill cut short
        using (var third = PrefixCache.For(model, Budget(model, 8), dir.Path, log: log.Add))
        {
            Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp", SearchOption.AllDirectories));
            var (again, restored) = Prefill(model, prompt, third);
            Assert.True(restored < 128, $"{restored} positions restored from damaged files");
            Assert.Equal(cold, again);
        }
        Assert.Contains(log, l => l.Contains("checksum mismatch") || l.Contains("wrong length"));
    }

    [Fact]
    public void AnotherModelsBlocks_AreNeverUsed()
    {
        var (model, _) = Loaded.Value;
        using var dir = new TempDir();
        using var other = DeepSeekModel.Load(RandomModel.V3Tiny, new LoadOptions { Quantize = DeepSeekSharp.Linear.WeightFormat.Q8_0 }); // other values, same shape
        Assert.NotEqual(PrefixCache.ModelIdentity(model), PrefixCache.ModelIdentity(other));
        int[] prompt = Tokens(6, 100);
        using (var a = PrefixCache.For(model, Budget(model, 4), dir.Path)) Prefill(model, prompt, a);
        var (coldOther, _) = Prefill(other, prompt, null);
        var log = new List<string>();
        string otherDir;
        using (var b = PrefixCache.For(other, Budget(other, 4), dir.Path, log: log.Add))
        {
            otherDir = b.Directory!;
            var (logits, restored) = Prefill(other, prompt, b); // A's blocks are under other keys in another folder
            Assert.Equal(0, restored);
            Assert.Equal(coldOther, logits);
        }
        // B's own block file, made to claim model A (checksum recomputed): found by name, rejected by content.
        string file = Directory.GetFiles(otherDir, "*.blk").Single();
        byte[] bytes = File.ReadAllBytes(file);
        PrefixCache.ModelIdentity(model).CopyTo(bytes, 12);
        System.Security.Cryptography.SHA256.HashData(bytes.AsSpan(0, bytes.Length - 32), bytes.AsSpan(bytes.Length - 32));
        File.WriteAllBytes(file, bytes);
        using var reopened = PrefixCache.For(other, Budget(other, 4), dir.Path, log: log.Add);
        var (again, none) = Prefill(other, prompt, reopened);
        Assert.Equal(0, none);
        Assert.Equal(coldOther, again);
        Assert.Contains(log, l => l.Contains("another model"));
        Assert.False(File.Exists(file));
    }

    [Theory]
    [InlineData(DeepSeekSharp.Linear.WeightFormat.Q4_K)]
    [InlineData(DeepSeekSharp.Linear.WeightFormat.Q6_K)]
    [InlineData(DeepSeekSharp.Linear.WeightFormat.F32)]
    public void EveryWeightFormat_HasAnIdentity_DistinctFromTheStoredOne(DeepSeekSharp.Linear.WeightFormat format)
    {
        var (model, _) = Loaded.Value;
        using var other = DeepSeekModel.Load(RandomModel.V3Tiny, new LoadOptions { Quantize = format });
        Assert.NotEqual(PrefixCache.ModelIdentity(model), PrefixCache.ModelIdentity(other));
        Assert.Equal(PrefixCache.ModelIdentity(other), PrefixCache.ModelIdentity(other));
    }

    [Fact]
    public void AnUnwritableDirectory_LeavesTheCacheInMemory()
    {
        var (model, _) = Loaded.Value;
        using var dir = new TempDir();
        string file = dir.File("not-a-folder");
        File.WriteAllText(file, "x");
        var log = new List<string>();
        using var cache = PrefixCache.For(model, Budget(model, 4), file, log: log.Add);
        Assert.Null(cache.Directory);
        Assert.Contains(log, l => l.Contains("memory only"));
        int[] prompt = Tokens(7, 100);
        Prefill(model, prompt, cache);
        Assert.Equal(64, Prefill(model, prompt, cache).Restored);
    }

    private static GenerationOptions Greedy(Speculation speculation) => new()
    {
        MaxTokens = 24, Speculation = speculation,
        Sampling = new SamplingOptions { Temperature = 0, LogitBias = new Dictionary<int, float> { [1] = -100 } },
    };

    [Theory]
    [InlineData(Speculation.Off)]
    [InlineData(Speculation.Mtp)]
    public async Task Generators_SharingTheCache_GiveTheColdTokens(Speculation speculation)
    {
        var (model, tok) = Loaded.Value;
        using var cache = PrefixCache.For(model, Budget(model, 16));
        int[] prompt = Tokens(8, 230);
        async Task<(List<int> Ids, GenerationUsage Usage)> Run(Generator g)
        {
            var ids = new List<int>();
            g.TokenObserver = ids.Add;
            GenerationUsage? usage = null;
            await foreach (GenerationUpdate u in g.GenerateAsync(prompt, false, Greedy(speculation))) usage ??= u.Usage;
            return (ids, usage!);
        }
        using var cold = new Generator(model, tok, 512);
        var expected = await Run(cold);
        using var a = new Generator(model, tok, 512) { PrefixCache = cache };
        var first = await Run(a);
        using var b = new Generator(model, tok, 512) { PrefixCache = cache };
        var second = await Run(b);
        Assert.Equal(expected.Ids, first.Ids);
        Assert.Equal(expected.Ids, second.Ids);
        Assert.Equal(0, first.Usage.CachedPromptTokens);
        // 192 positions restored; a speculating generator reruns the last of them for the MTP module's input.
        Assert.Equal(speculation == Speculation.Mtp ? 191 : 192, second.Usage.CachedPromptTokens);
    }

    [Theory]
    [InlineData(Speculation.Off)]
    [InlineData(Speculation.Mtp)]
    public async Task BatchScheduler_WithTheCache_GivesTheColdText_AndReportsHits(Speculation speculation)
    {
        var (model, tok) = Loaded.Value;
        using var cache = PrefixCache.For(model, Budget(model, 16));
        string shared = string.Join(" ", Enumerable.Range(0, 120).Select(i => $"word{i}"));
        JsonElement Ask(string q) => JsonSerializer.SerializeToElement(new[] { new { role = "system", content = shared }, new { role = "user", content = q } });
        string[] questions = ["first question", "second one", "and a third"];
        using var plain = new BatchScheduler(model, tok, new BatchOptions { MaxBatch = 2, ContextLength = 512, PrefillChunk = 50 });
        var expected = new List<string>();
        foreach (string q in questions) expected.Add((await BatchSchedulerTests.Collect(plain.ChatAsync(Ask(q), Greedy(speculation)))).Text);

        using var engine = new BatchScheduler(model, tok, new BatchOptions { MaxBatch = 2, ContextLength = 512, PrefillChunk = 50, PrefixCache = cache });
        var firstReply = await BatchSchedulerTests.Collect(engine.ChatAsync(Ask(questions[0]), Greedy(speculation)));
        var rest = await Task.WhenAll(questions[1..].Select(q => Task.Run(() => BatchSchedulerTests.Collect(engine.ChatAsync(Ask(q), Greedy(speculation))))));
        Assert.Equal(expected, [firstReply.Text, .. rest.Select(r => r.Text)]);
        Assert.Equal(0, firstReply.Usage.CachedPromptTokens);
        Assert.All(rest, r => Assert.True(r.Usage.CachedPromptTokens >= 127, $"{r.Usage.CachedPromptTokens} cached"));
    }
}
