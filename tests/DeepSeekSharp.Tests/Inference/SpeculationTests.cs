using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using System.Text.Json;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Inference;

/// <summary>MTP speculative decoding: greedy output identical to plain decoding, token for token, whether drafts are
/// rejected (random weights) or accepted (the trained model, or drafts forced to the known continuation); sampled
/// output distributed exactly as without speculation.</summary>
public class SpeculationTests
{
    private static readonly string R1Tiny = Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny");
    private static readonly Lazy<string> Tokenizer256 = new(MakeTokenizer256);

    /// <summary>A tokenizer for the golden models' 256-token vocabularies: r1-tiny's 256 byte tokens as ids 0–255, no
    /// special tokens, no merges, no template (the tests feed and compare ids; text only has to decode).</summary>
    private static string MakeTokenizer256()
    {
        string dir = Path.Combine(TestScratch.Root, "dss-tokenizer-256-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(R1Tiny, "tokenizer.json")))!;
        json["added_tokens"] = new System.Text.Json.Nodes.JsonArray();
        var vocab = new System.Text.Json.Nodes.JsonObject();
        foreach (var (piece, id) in json["model"]!["vocab"]!.AsObject())
            if (id!.GetValue<int>() is >= 16 and < 16 + 256 and var i) vocab[piece] = i - 16;
        json["model"]!["vocab"] = vocab;
        json["model"]!["merges"] = new System.Text.Json.Nodes.JsonArray();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_bos_token": false}""");
        return dir;
    }

    /// <summary>Every golden model with an MTP module (as stored and quantised), a random one and the trained one.</summary>
    public static TheoryData<string> ModelsWithMtp => ["golden:v3-tiny", "golden:v3-tiny:q8_0", "golden:v3-tiny:q4_k", "random:v3-tiny", "r1-tiny"];

    private static Generator Load(string name, int context = 128)
    {
        string[] parts = name.Split(':');
        (string model, string tokenizer) = parts[0] switch
        {
            "random" => (RandomModel.V3Tiny, RandomModel.V3Tiny),
            "r1-tiny" => (R1Tiny, R1Tiny),
            _ => (GoldenCase.DataPath(parts[1]), Tokenizer256.Value),
        };
        var options = new LoadOptions
        {
            Quantize = parts.Length < 3 ? null : parts[2] == "q8_0" ? DeepSeekSharp.Linear.WeightFormat.Q8_0 : DeepSeekSharp.Linear.WeightFormat.Q4_K,
        };
        return new Generator(DeepSeekModel.Load(model, options), Tokenizer.Load(tokenizer), context);
    }

    private static int[] Prompt(Generator g, ulong seed, int length)
    {
        var rng = new Rng(seed);
        int vocab = g.Model.Config.VocabSize;
        return [.. Enumerable.Range(0, length).Select(_ => 2 + (int)(rng.NextDouble() * (vocab - 2)))]; // no BOS/EOS
    }

    /// <summary>The ids a generation produces.</summary>
    private static async Task<(List<int> Ids, GenerationUsage Usage)> Run(Generator g, int[] prompt, GenerationOptions options)
    {
        var ids = new List<int>();
        g.TokenObserver = ids.Add;
        GenerationUsage? usage = null;
        try
        {
            await foreach (GenerationUpdate u in g.GenerateAsync(prompt, startsInReasoning: false, options)) usage ??= u.Usage;
        }
        finally { g.TokenObserver = null; }
        return (ids, usage!);
    }

    private static GenerationOptions Greedy(int maxTokens, Speculation speculation, int eos, int drafts = 1) => new()
    {
        MaxTokens = maxTokens,
        Speculation = speculation,
        SpeculativeTokens = drafts,
        Sampling = new SamplingOptions { Temperature = 0, LogitBias = new Dictionary<int, float> { [eos] = -100 } }, // run to max_tokens
    };

    [Theory]
    [MemberData(nameof(ModelsWithMtp))]
    public async Task Greedy_IsIdenticalWithAndWithoutMtp(string name)
    {
        using Generator g = Load(name);
        Assert.True(g.CanSpeculate);
        int eos = g.Model.Config.EosTokenId ?? 1;
        for (ulong seed = 1; seed <= 3; seed++)
        {
            int[] prompt = name == "r1-tiny"
                ? g.ChatPrompt(JsonSerializer.SerializeToElement(new[] { new { role = "user", content = $"What is {100 + 37 * (int)seed} + {58 * (int)seed}?" } })).Ids
                : Prompt(g, seed, 5 + 7 * (int)seed);
            g.Reset();
            var (plain, _) = await Run(g, prompt, Greedy(60, Speculation.Off, eos));
            foreach (int drafts in new[] { 1, 3 }) // one draft a pass, and three chained
            {
                g.Reset();
                var (spec, usage) = await Run(g, prompt, Greedy(60, Speculation.Mtp, eos, drafts));
                Assert.Equal(plain, spec);
                Assert.Equal(60, spec.Count);
                Assert.True(usage.DraftTokens > 0);
                if (name == "r1-tiny" && drafts == 1) Assert.True(usage.DraftAcceptance > 0.8, $"acceptance {usage.DraftAcceptance:P0}"); // a trained MTP module

                // Drafts forced to the known continuation (every accept path), and forced wrong every third time.
                foreach (int wrongEvery in new[] { int.MaxValue, 3 })
                {
                    g.Reset();
                    int calls = 0;
                    g.DraftOverride = (position, _) => ++calls % wrongEvery == 0 ? (plain[position - prompt.Length] + 1) % g.Model.Config.VocabSize : plain[position - prompt.Length];
                    var (forced, forcedUsage) = await Run(g, prompt, Greedy(60, Speculation.Mtp, eos, drafts));
                    g.DraftOverride = null;
                    Assert.Equal(plain, forced);
                    if (wrongEvery == int.MaxValue)
                    {
                        // Every draft right: each pass gives its drafts and the token after them, drafting no more
                        // than the 60-token reply can still take (the last token alone runs plainly).
                        int expected = 0;
                        for (int left = 59; left > 1;)
                        {
                            int k = Math.Min(drafts, left - 1);
                            expected += k;
                            left -= k + 1;
                        }
                        Assert.Equal(expected, forcedUsage.DraftTokens);
                        Assert.Equal(expected, forcedUsage.AcceptedDraftTokens);
                    }
                    else Assert.Equal(forcedUsage.DraftTokens - forcedUsage.DraftTokens / wrongEvery, forcedUsage.AcceptedDraftTokens);
                }
            }
        }
    }

    /// <summary>Chained drafts leave nothing of themselves in the MTP cache: after the same greedy reply, drafting three
    /// a pass leaves the rows (bit for bit) that drafting one a pass leaves — as far as both reach: how many rows still
    /// wait for their next token at the end depends on how the last passes went — and never a row whose next token is
    /// not in the main cache.</summary>
    [Theory]
    [InlineData("random:v3-tiny")]
    [InlineData("r1-tiny")]
    public async Task ChainedDrafts_LeaveTheMtpCacheAsOneDraftDoes(string name)
    {
        using Generator g = Load(name);
        int eos = g.Model.Config.EosTokenId ?? 1;
        int[] prompt = Prompt(g, 4, 12);
        float[][] MtpRows()
        {
            LatentKvCache cache = g.Session.MtpCache!;
            Assert.InRange(cache.Length, prompt.Length, g.Session.Cache.Length - 1);
            return [.. Enumerable.Range(0, cache.Layers).Select(l => cache.Layer(l)[..(cache.Length * cache.Width)].ToArray())];
        }
        var (one, _) = await Run(g, prompt, Greedy(40, Speculation.Mtp, eos, drafts: 1));
        float[][] expected = MtpRows();
        g.Reset();
        var (three, usage) = await Run(g, prompt, Greedy(40, Speculation.Mtp, eos, drafts: 3));
        float[][] actual = MtpRows();
        Assert.Equal(one, three);
        Assert.True(usage.DraftTokens > 0);
        for (int l = 0; l < expected.Length; l++)
        {
            int common = Math.Min(expected[l].Length, actual[l].Length);
            Assert.True(common >= (prompt.Length + 30) * g.Session.MtpCache!.Width);
            Assert.Equal(expected[l][..common], actual[l][..common]);
        }
    }

    [Fact]
    public async Task SecondTurn_ReusesTheCache_WithSpeculation_AndMatchesAFreshPlainRun()
    {
        using Generator g = Load("random:v3-tiny");
        int eos = g.Model.Config.EosTokenId ?? 1;
        int[] first = Prompt(g, 7, 30);
        var (reply, _) = await Run(g, first, Greedy(20, Speculation.Mtp, eos));
        int[] second = [.. first, .. reply, .. Prompt(g, 8, 10)];
        var (turn2, _) = await Run(g, second, Greedy(20, Speculation.Mtp, eos));
        // A plain run then a speculative one on the same generator: the MTP cache is caught up, not trusted stale.
        var (plainFirst, _) = await Run(g, first, Greedy(20, Speculation.Off, eos));
        var (turn2Again, _) = await Run(g, second, Greedy(20, Speculation.Mtp, eos));

        using Generator fresh = Load("random:v3-tiny");
        var (expected, _) = await Run(fresh, second, Greedy(20, Speculation.Off, eos));
        Assert.Equal(expected, turn2);
        Assert.Equal(reply, plainFirst);
        Assert.Equal(expected, turn2Again);
    }

    [Fact]
    public async Task NearTheEndOfTheContext_FallsBackToPlainSteps()
    {
        using Generator g = Load("random:v3-tiny", context: 48);
        int eos = g.Model.Config.EosTokenId ?? 1;
        int[] prompt = Prompt(g, 3, 30);
        var (plain, _) = await Run(g, prompt, Greedy(100, Speculation.Off, eos));
        g.Reset();
        var (spec, _) = await Run(g, prompt, Greedy(100, Speculation.Mtp, eos));
        Assert.Equal(18, plain.Count); // the context is full
        Assert.Equal(plain, spec);
    }

    [Fact]
    public async Task WithoutAnMtpModule_SpeculationIsIgnored()
    {
        using var g = new Generator(DeepSeekModel.Load(GoldenCase.DataPath("v2-lite-tiny")), Tokenizer.Load(Tokenizer256.Value), 128);
        Assert.False(g.CanSpeculate);
        int[] prompt = Prompt(g, 1, 9);
        var (plain, _) = await Run(g, prompt, Greedy(10, Speculation.Off, 1));
        g.Reset();
        var (spec, usage) = await Run(g, prompt, Greedy(10, Speculation.Mtp, 1));
        Assert.Equal(plain, spec);
        Assert.Equal(0, usage.DraftTokens);
    }

    /// <summary>The batch scheduler: speculative and plain requests side by side, prompts prefilled in small chunks
    /// beside running decodes, each sequence's greedy text the same as plain decoding alone; sampled with a seed,
    /// repeatable.</summary>
    [Theory]
    [InlineData("r1-tiny")]
    [InlineData("random:v3-tiny")]
    public async Task BatchScheduler_Speculating_GivesThePlainGreedyText(string name)
    {
        using Generator single = Load(name, context: 256);
        int eos = single.Model.Config.EosTokenId ?? 1;
        string[] questions = ["What is 452 + 379?", "Compute 610 - 47.", "What is 23 * 19?", "Mia has 37 stickers and gives away 19. How many are left?", "What is 7 + 8?"];
        JsonElement User(string q) => JsonSerializer.SerializeToElement(new[] { new { role = "user", content = q } });
        var plain = new List<string>();
        foreach (string q in questions) plain.Add((await BatchSchedulerTests.Collect(single.ChatAsync(User(q), Greedy(80, Speculation.Off, eos)))).Item1);

        using var engine = new BatchScheduler(single.Model, single.Tokenizer, new BatchOptions { MaxBatch = 4, ContextLength = 256, PrefillChunk = 5 });
        Assert.True(engine.CanSpeculate);
        var results = await Task.WhenAll(questions.Select((q, i) => Task.Run(() =>
            BatchSchedulerTests.Collect(engine.ChatAsync(User(q), Greedy(80, i % 3 == 1 ? Speculation.Off : Speculation.Mtp, eos))))));
        Assert.Equal(plain, results.Select(r => r.Item1));
        Assert.Equal(0, results[1].Item2.DraftTokens);
        Assert.True(results[0].Item2.DraftTokens > 0);
        if (name == "r1-tiny") Assert.True(results[0].Item2.DraftAcceptance > 0.8, $"{results[0].Item2.DraftAcceptance:P0}");

        // Sampled: repeatable for a seed. (Not compared with the generator: the drafts come from MTP rows computed in
        // other chunks there, so a near tie can draft differently and the accept test then draws differently —
        // both exact samples of the model; SamplerChain's exactness is Sampling_WithSpeculation_KeepsTheModelsDistribution.)
        var sampled = new GenerationOptions { MaxTokens = 40, Speculation = Speculation.Mtp, Sampling = new SamplingOptions { Temperature = 0.8f, Seed = 3 } };
        var once = await BatchSchedulerTests.Collect(engine.ChatAsync(User(questions[0]), sampled));
        var twice = await BatchSchedulerTests.Collect(engine.ChatAsync(User(questions[0]), sampled));
        Assert.Equal(once.Item1, twice.Item1);
        Assert.True(once.Item2.DraftTokens > 0);
    }

    /// <summary>Sampled three-token continuations of one prompt on a 256-token model with top-k 3 (27 possible
    /// sequences): their frequencies with speculation — the module's drafts, and a fixed draft that is often right —
    /// match the model's exact probabilities computed step by step (chi-square, 26 degrees of freedom, p = 0.001).</summary>
    [Fact]
    public async Task Sampling_WithSpeculation_KeepsTheModelsDistribution()
    {
        using Generator g = Load("golden:v3-tiny");
        var sampling = new SamplingOptions { Temperature = 1, TopK = 3, LogitBias = new Dictionary<int, float> { [1] = -100 } }; // no end of sequence
        int[] prompt = Prompt(g, 5, 6);
        Dictionary<(int, int, int), double> exact = Exact(g.Model, prompt, sampling);
        int mostLikelySecond = exact.MaxBy(kv => kv.Value).Key.Item2;

        foreach (Func<int, int, int>? draft in new Func<int, int, int>?[] { null, (_, _) => mostLikelySecond })
        {
            g.DraftOverride = draft;
            var counts = new Dictionary<(int, int, int), int>();
            const int samples = 3000;
            int drafted = 0, accepted = 0;
            for (int i = 0; i < samples; i++)
            {
                var (ids, usage) = await Run(g, prompt, new GenerationOptions
                {
                    MaxTokens = 3, Speculation = Speculation.Mtp, Sampling = sampling with { Seed = (ulong)i + 1 },
                });
                counts[(ids[0], ids[1], ids[2])] = counts.GetValueOrDefault((ids[0], ids[1], ids[2])) + 1;
                drafted += usage.DraftTokens;
                accepted += usage.AcceptedDraftTokens;
            }
            g.DraftOverride = null;
            Assert.True(drafted > 0);
            if (draft is not null) Assert.True(accepted > samples / 10, $"{accepted} of {drafted} drafts accepted"); // the accept path ran
            double chi2 = 0;
            foreach (var (key, p) in exact)
            {
                double expected = p * samples;
                chi2 += Math.Pow(counts.GetValueOrDefault(key) - expected, 2) / expected;
            }
            Assert.True(counts.Keys.All(exact.ContainsKey), "a sequence outside the top-3 tree was sampled");
            Assert.True(chi2 < 54.05, $"chi-square {chi2:F1} over {exact.Count} sequences (draft {(draft is null ? "MTP" : "fixed")})");
        }
    }

    /// <summary>p(a) p(b | a) p(c | a b) under the sampling filters, for every three-token sequence they allow.</summary>
    private static Dictionary<(int, int, int), double> Exact(DeepSeekModel model, int[] prompt, SamplingOptions sampling)
    {
        var result = new Dictionary<(int, int, int), double>();
        foreach (var (a, pa) in Filtered(model, prompt, [], sampling))
            foreach (var (b, pb) in Filtered(model, prompt, [a], sampling))
                foreach (var (c, pc) in Filtered(model, prompt, [a, b], sampling))
                    result[(a, b, c)] = pa * pb * pc;
        return result;
    }

    /// <summary>The filtered next-token distribution after the prompt (prefilled) and then <paramref name="decoded"/>
    /// one token at a time, as generation computes it.</summary>
    private static List<(int Id, double P)> Filtered(DeepSeekModel model, int[] prompt, int[] decoded, SamplingOptions sampling)
    {
        using InferenceSession s = model.CreateSession(prompt.Length + decoded.Length);
        float[] logits = new float[model.Config.VocabSize];
        s.Forward(prompt, logits, allPositions: false);
        foreach (int t in decoded) s.Forward([t], logits);
        var chain = new SamplerChain(sampling, model.Config.VocabSize);
        chain.Sample(logits);
        return [.. chain.Candidates.Items.ToArray().Select(c => (c.Id, (double)c.P))];
    }
}
