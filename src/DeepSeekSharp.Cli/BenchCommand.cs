using DeepSeekSharp.Linear;
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss bench --model PATH [--quantize q8_0|q4_0|q4_k|q5_k|q6_k|bf16|f32] [--mmap] [--cache-type f32|bf16] [--prompt-tokens 512] [--gen-tokens 128]
/// [--threads N] [--repeat R] [--speculative mtp [--speculative-tokens K] [--draft-acceptance P]] [--profile] [--json]</c> and <c>dss bench --memory</c>.</summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder or .gguf file" };
        var loading = new ModelLoading();
        Option<string?> quantize = loading.Quantize;
        Option<bool> mmap = loading.Mmap;
        var noMmap = new Option<bool>("--no-mmap") { Description = "read weights into anonymous memory (the default)" };
        var promptTokens = new Option<int>("--prompt-tokens") { DefaultValueFactory = _ => 512, Description = "prefill length" };
        var genTokens = new Option<int>("--gen-tokens") { DefaultValueFactory = _ => 128, Description = "decode steps" };
        var threads = new Option<int?>("--threads") { Description = "threads (default: all cores)" };
        var repeat = new Option<int>("--repeat") { DefaultValueFactory = _ => 3, Description = "timed runs, after one untimed warm-up run; medians are reported" };
        var json = new Option<bool>("--json") { Description = "print one JSON object" };
        var memory = new Option<bool>("--memory") { Description = "measure the machine's read bandwidth (1 thread and all threads)" };
        var readBound = new Option<bool>("--read-bound")
        {
            Description = "measure the read bandwidth (the --memory probe) before the first decode run and after each, and report each run's decode GB/s as a share of the reads around it",
        };
        var cpu = new Option<bool>("--cpu") { Description = "print the vector paths the kernels take here (instruction sets on and off) and stop" };
        var speculative = new Option<string?>("--speculative") { Description = "also decode with speculation (mtp) and compare, run by run" };
        var draftAcceptance = new Option<double?>("--draft-acceptance")
        {
            Description = "with --speculative: draft the model's own next greedy token with this probability instead of the MTP module's draft " +
                "(the mechanics at a chosen acceptance on untrained weights, or on a model without MTP; the module's cost is then not counted)",
        };
        var speculativeTokens = new Option<int>("--speculative-tokens")
        {
            Description = "with --speculative: drafts per pass (more than 1 chains the MTP module on its own drafts)", DefaultValueFactory = _ => 1,
        };
        var prefixTokens = new Option<int>("--prefix-tokens")
        {
            Description = "also time the first token of a prompt of this many shared tokens + 16 new ones, cold and with the prefix cached",
        };
        var depth = new Option<int>("--depth")
        {
            Description = "decode (and prefill) after this many cached positions, as llama-bench -d (latents of a real 512-token prefill, repeated)",
        };
        var constrain = new Option<string?>("--constrain")
        {
            Description = "also decode sampled under an output format (json_object, or a JSON-schema file) and without it, run by run (needs the tokenizer)",
        };
        var profile = new Option<bool>("--profile")
        {
            Description = "after the timed runs, prefill and decode once more timing each part of the prompt's pass and of a step (projections, " +
                "attention, router, experts, dense MLP, head; with --speculative, of a verify pass too) and report milliseconds per prefill and per step, and beside each part of a step the bytes it reads (weights; the attention's with the latent cache) and at what rate",
        };
        var cmd = new Command("bench", "Measure prefill and decode speed, or memory bandwidth")
            { model, quantize, mmap, noMmap, loading.CacheType, promptTokens, genTokens, threads, repeat, speculative, draftAcceptance, speculativeTokens, prefixTokens, depth, constrain, readBound, profile, json, memory, cpu };
        cmd.SetAction(r =>
        {
            if (r.GetValue(cpu))
            {
                stdout.WriteLine($"kernel paths: {KernelPaths.Describe()}");
                return 0;
            }
            if (r.GetValue(memory))
            {
                double one = ReadBandwidth.Measure(1), all = ReadBandwidth.Measure(Environment.ProcessorCount);
                if (r.GetValue(json))
                    stdout.WriteLine(JsonSerializer.Serialize(new { read_gb_s_1_thread = one / 1e9, read_gb_s_all_threads = all / 1e9, threads = Environment.ProcessorCount }));
                else stdout.WriteLine($"read bandwidth: {one / 1e9:F1} GB/s on 1 thread, {all / 1e9:F1} GB/s on {Environment.ProcessorCount} threads (1 GiB, best of 5)");
                return 0;
            }
            string path = r.GetValue(model) ?? throw new ArgumentException("--model is required (or use --memory)");
            int prompt = r.GetValue(promptTokens), gen = r.GetValue(genTokens), runs = r.GetValue(repeat);
            if (prompt < 0) throw new ArgumentException($"--prompt-tokens must be 0 or more (got {prompt})");
            if (gen < 1) throw new ArgumentException($"--gen-tokens must be 1 or more (got {gen})");
            if (runs < 1) throw new ArgumentException($"--repeat must be 1 or more (got {runs})");
            int prefix = r.GetValue(prefixTokens);
            int cached = r.GetValue(depth);
            if (cached < 0) throw new ArgumentException($"--depth must be 0 or more (got {cached})");
            if (cached > 0 && r.GetValue(speculative) is not null) throw new ArgumentException("--depth and --speculative are not measured together yet");
            if (prefix < 0) throw new ArgumentException($"--prefix-tokens must be 0 or more (got {prefix})");
            bool speculate = r.GetValue(speculative) switch
            {
                null => false,
                "mtp" => true,
                var other => throw new ArgumentException($"--speculative '{other}' is not supported; supported: mtp"),
            };
            double? acceptance = r.GetValue(draftAcceptance);
            if (acceptance is { } a && !(a >= 0 && a <= 1)) throw new ArgumentException($"--draft-acceptance must be in [0, 1] (got {a})");
            if (acceptance is not null && !speculate) throw new ArgumentException("--draft-acceptance needs --speculative mtp");
            int specTokens = r.GetValue(speculativeTokens);
            if (specTokens is < 1 or > DeepSeekSharp.Inference.GenerationOptions.MaxSpeculativeTokens)
                throw new ArgumentException($"--speculative-tokens must be in [1, {DeepSeekSharp.Inference.GenerationOptions.MaxSpeculativeTokens}] (got {specTokens})");
            if (r.GetValue(threads) is { } t) WorkerPool.Configure(t);
            WeightFormat? format = ModelLoading.Format(r.GetValue(quantize));
            var clock = Stopwatch.StartNew();
            using DeepSeekModel m = ModelLoading.Load(path, format, r.GetValue(mmap) && !r.GetValue(noMmap), stderr, loading.CacheFormat(r));
            if (speculate && m.MtpLayers == 0 && acceptance is null)
                throw new ArgumentException($"{path} has no MTP module (num_nextn_predict_layers = 0): speculation drafts nothing; measure the mechanics with --draft-acceptance P");
            double loadSeconds = clock.Elapsed.TotalSeconds;
            if (cached + prompt + gen + 1 + specTokens > m.Config.MaxPositionEmbeddings)
                throw new ArgumentException($"--depth {cached} + --prompt-tokens {prompt} + --gen-tokens {gen} (+ {1 + specTokens}) exceeds max_position_embeddings ({m.Config.MaxPositionEmbeddings})");
            Result res = Run(m, prompt, gen, runs, speculate, acceptance, cached, r.GetValue(readBound), specTokens, r.GetValue(profile));
            (double Cold, double Warm, int Cached)? ttft = prefix > 0 ? FirstTokenTimes(m, prefix, runs) : null;
            (double Free, double Constrained, double MaskedSteps)? constrained = r.GetValue(constrain) is { } c
                ? ConstrainedDecode(m, Tokenizer.Load(path), ConstraintFormat(c), prompt, gen, runs) : null;
            long rss = PeakRss();
            // A decoded token reads its active weights and the latent cache of every layer up to its position.
            long cacheBytes = (long)((cached + prompt + gen / 2.0) * m.Config.NLayers * m.Config.LatentCacheWidth * LatentKvCache.BytesPerValue(m.CacheFormat));
            long active = ActiveBytesPerToken(m) + cacheBytes;
            double gbs = active * res.DecodeTokS / 1e9;
            // Each run's decode GB/s against the mean of the reads just before and just after it (the host's bandwidth drifts).
            double? ofRead = res.Reads.Count > 0
                ? Median([.. res.DecodeRuns.Select((tokS, i) => active * tokS / ((res.Reads[i] + res.Reads[i + 1]) / 2))]) : null;
            double? readGbs = res.Reads.Count > 0 ? Median([.. res.Reads]) / 1e9 : null;
            if (r.GetValue(json))
                stdout.WriteLine(JsonSerializer.Serialize(new
                {
                    prefill_tok_s = res.PrefillTokS, decode_tok_s = res.DecodeTokS, active_bytes_per_token = active, decode_gb_s = gbs,
                    peak_rss_bytes = rss, load_s = loadSeconds, weight_bytes = m.WeightBytes, threads = WorkerPool.Shared.Threads,
                    prompt_tokens = prompt, gen_tokens = gen, depth = cached, cache_bytes_per_token = cacheBytes, format = format?.ToString() ?? "stored", cache_type = m.CacheFormat.ToString().ToLowerInvariant(),
                    read_gb_s = readGbs, decode_of_read = ofRead,
                    speculative = res.Spec is { } sp ? new
                    {
                        decode_tok_s = sp.DecodeTokS, speedup = sp.DecodeTokS / res.DecodeTokS, acceptance = sp.Acceptance,
                        tokens_per_pass = sp.TokensPerPass, draft_acceptance = acceptance, drafts_per_pass = specTokens,
                        pass_cost_steps = sp.PassCost(res.DecodeTokS), plain_experts_per_layer = sp.PlainExperts,
                        verify_experts_per_layer = sp.VerifyExperts,
                    } : null,
                    prefix_cache = ttft is { } tt ? new { prefix_tokens = prefix, cached_tokens = tt.Cached, cold_ttft_ms = tt.Cold * 1e3, warm_ttft_ms = tt.Warm * 1e3 } : null,
                    constrained = constrained is { } cd ? new { format = r.GetValue(constrain), sampled_tok_s = cd.Free, constrained_tok_s = cd.Constrained, masked_step_share = cd.MaskedSteps } : null,
                    profile = res.Profile is { } pr ? new
                    {
                        prefill_ms = pr.Prompt?.Milliseconds(),
                        plain_step_ms = pr.Plain.MillisecondsPerPass(), plain_steps = pr.Plain.Passes, plain_step_bytes = StepBytes(m, cacheBytes),
                        verify_pass_ms = pr.Verify?.MillisecondsPerPass(), verify_passes = pr.Verify?.Passes, verify_tokens = pr.Verify is null ? (int?)null : 1 + specTokens,
                    } : null,
                }));
            else
            {
                stdout.WriteLine($"model {path}: {m.WeightBytes / 1e9:F2} GB of weights ({format?.ToString() ?? "as stored"}), loaded in {loadSeconds:F1} s, {WorkerPool.Shared.Threads} threads");
                stdout.WriteLine($"prefill {prompt} tokens: {res.PrefillTokS:F1} tokens/s (median of {runs})");
                stdout.WriteLine(cached == 0 && prompt == 0
                    ? $"decode {gen} tokens: {res.DecodeTokS:F2} tokens/s, {active / 1e9:F3} GB active weights per token = {gbs:F1} GB/s"
                    : $"decode {gen} tokens after {cached + prompt} positions: {res.DecodeTokS:F2} tokens/s, {(active - cacheBytes) / 1e9:F3} GB active weights + " +
                      $"{cacheBytes / 1e9:F3} GB latent cache per token = {gbs:F1} GB/s");
                if (ofRead is { } share)
                    stdout.WriteLine($"read bandwidth around the decode runs: {readGbs:F1} GB/s (median); decode read {share:P0} of it (median of the runs' shares)");
                if (res.Spec is { } sp)
                {
                    string source = acceptance is { } p ? $"the next greedy token with probability {p:F2}" : "the MTP module";
                    stdout.WriteLine($"speculative decode (drafts from {source}): {sp.DecodeTokS:F2} tokens/s = {sp.DecodeTokS / res.DecodeTokS:F2}x, " +
                        $"{sp.Acceptance:P1} of drafts accepted, {sp.TokensPerPass:F2} tokens per forward pass ({specTokens} draft{(specTokens == 1 ? "" : "s")} a pass), " +
                        $"a pass costing {sp.PassCost(res.DecodeTokS):F2} plain steps");
                    if (sp.PlainExperts > 0)
                        stdout.WriteLine($"routed experts read per MoE layer and pass: {sp.PlainExperts:F2} decoding one token, {sp.VerifyExperts:F2} verifying {1 + specTokens}");
                }
                if (ttft is { } tt)
                    stdout.WriteLine($"first token after a {prefix}-token shared prefix + 16 tokens: cold {tt.Cold * 1e3:F1} ms, " +
                        $"warm {tt.Warm * 1e3:F1} ms ({tt.Cached} positions from the prefix cache) = {tt.Cold / tt.Warm:F1}x faster (median of {runs})");
                if (constrained is { } cd)
                    stdout.WriteLine($"sampled decode under {r.GetValue(constrain)}: {cd.Constrained:F2} tokens/s against {cd.Free:F2} without = {cd.Constrained / cd.Free:P1} " +
                        $"(the grammar refused the drawn token and the allowed set was computed at {cd.MaskedSteps:P0} of steps; median of {runs})");
                if (res.Profile is { } pr) WriteProfile(stdout, pr, prompt, 1 + specTokens, StepBytes(m, cacheBytes));
                stdout.WriteLine($"peak RSS {rss / 1e9:F2} GB");
            }
            return 0;
        });
        return cmd;
    }

    /// <summary>Fills the cache with <paramref name="depth"/> positions, as llama-bench's -d: a real prefill of up to 512
    /// random tokens, whose latent rows are then repeated to the depth (what attention reads, not what it finds, sets the
    /// speed).</summary>
    private static void FillDepth(InferenceSession s, int depth, float[] logits)
    {
        if (depth == 0) return;
        int real = Math.Min(depth, 512);
        int[] tokens = RandomTokens(3, real, logits.Length);
        s.Forward(tokens, logits, allPositions: false);
        var rows = new float[real * s.Cache.Width];
        for (int l = 0; l < s.Cache.Layers; l++)
        {
            s.Cache.ReadRows(l, 0, rows);
            for (int p = real; p < depth; p += real)
                s.Cache.WriteRows(l, p, rows.AsSpan(0, Math.Min(real, depth - p) * s.Cache.Width));
        }
        s.Cache.Commit(depth - real);
    }

    /// <summary><paramref name="n"/> seeded random token ids below 100,000 (ordinary text tokens of the real vocabulary).</summary>
    private static int[] RandomTokens(ulong seed, int n, int vocab)
    {
        var rng = new Rng(seed);
        ulong ids = (ulong)Math.Min(100000, vocab);
        return Enumerable.Range(0, n).Select(_ => (int)(rng.NextUInt64() % ids)).ToArray();
    }

    /// <param name="DecodeRuns">each run's decode tokens/s</param>
    /// <param name="Reads">with --read-bound: the read bandwidth (bytes/s) before the first run and after each; else empty</param>
    private readonly record struct Result(double PrefillTokS, double DecodeTokS, List<double> DecodeRuns, List<double> Reads, SpecResult? Spec = null,
        Profile? Profile = null);

    /// <param name="Prompt">the prompt's prefill (a pass per piece of 512 positions), null for an empty prompt</param>
    /// <param name="Verify">with --speculative: the passes verifying drafts</param>
    private sealed record Profile(PartTimer? Prompt, PartTimer Plain, PartTimer? Verify);

    /// <summary>--profile: the prompt prefilled and the greedy continuation decoded once more, one step at a time, the
    /// prompt's parts and each step's timed; with speculation, a speculative run too, its verify passes timed.</summary>
    private static Profile TimeParts(DeepSeekModel m, InferenceSession s, int depth, int[] prompt, List<int> reference, bool speculate, int drafts,
        double? draftAcceptance)
    {
        var plain = new PartTimer();
        PartTimer? promptParts = prompt.Length > 0 ? new PartTimer() : null;
        Replay(m, s, depth, prompt, reference, plain, promptParts);
        if (!speculate) return new Profile(promptParts, plain, null);
        var verify = new PartTimer();
        Speculative(m, s, prompt, reference, drafts, draftAcceptance, new Rng(100), verify);
        return new Profile(promptParts, plain, verify);
    }

    /// <summary>Prefills <paramref name="prompt"/> in pieces of 512 positions; the last one's logits in <paramref name="logits"/>.
    /// <paramref name="observer"/>, if any, watches each piece as a pass.</summary>
    private static void Prefill(InferenceSession s, int[] prompt, float[] logits, IPassObserver? observer = null)
    {
        s.Observer = observer;
        try
        {
            for (int start = 0; start < prompt.Length; start += 512)
            {
                observer?.BeginPass();
                s.Forward(prompt.AsSpan(start, Math.Min(512, prompt.Length - start)), logits, allPositions: false);
                observer?.EndPass();
            }
        }
        finally { s.Observer = null; }
    }

    /// <summary>The prompt prefilled (its pieces passes of <paramref name="promptObserver"/>) and the greedy continuation
    /// decoded once more after the same filled depth, one token a step, each step a pass of <paramref name="observer"/>.</summary>
    private static void Replay(DeepSeekModel m, InferenceSession s, int depth, int[] prompt, List<int> reference, IPassObserver observer,
        IPassObserver? promptObserver = null)
    {
        var logits = new float[m.Config.VocabSize];
        if (depth > 0) s.Cache.Truncate(depth); // back to the filled depth, as each timed run starts
        else s.Reset();
        Prefill(s, prompt, logits, promptObserver);
        int[] one = [0];
        s.Observer = observer;
        try
        {
            for (int i = 0; i + 1 < reference.Count; i++)
            {
                one[0] = reference[i];
                observer.BeginPass();
                s.Forward(one, logits);
                observer.EndPass();
            }
        }
        finally { s.Observer = null; }
    }

    /// <summary>What each part of a decode step reads (<see cref="PartBytesPerToken"/>), the attention with the latent
    /// cache a step reads on average (<paramref name="cacheBytes"/>).</summary>
    private static Dictionary<string, long> StepBytes(DeepSeekModel m, long cacheBytes)
    {
        Dictionary<string, long> bytes = PartBytesPerToken(m);
        bytes[PartTimer.Names[PartTimer.Attention]] += cacheBytes;
        return bytes;
    }

    /// <param name="stepBytes">bytes each part of a decode step reads: each part's GB/s is printed beside its time</param>
    private static void WriteProfile(TextWriter stdout, Profile p, int promptTokens, int verifyTokens, Dictionary<string, long> stepBytes)
    {
        if (p.Prompt is { } prompt)
        {
            // A pass per piece of the prompt: the parts summed over the pieces are the whole prefill's.
            Dictionary<string, double> parts = prompt.Milliseconds();
            stdout.WriteLine($"ms per prefill of {promptTokens} tokens ({prompt.Passes} pass{(prompt.Passes == 1 ? "" : "es")}):");
            foreach (string name in PartTimer.Names) stdout.WriteLine($"  {name,-18} {parts[name],8:F3}");
            stdout.WriteLine($"  {"total",-18} {parts.Values.Sum(),8:F3}");
        }
        Dictionary<string, double> plain = p.Plain.MillisecondsPerPass(), verify = p.Verify?.MillisecondsPerPass() ?? [];
        stdout.WriteLine(p.Verify is null ? $"ms per decode step ({p.Plain.Passes} steps):"
            : $"ms per decode step ({p.Plain.Passes} steps) | per pass verifying {verifyTokens} tokens ({p.Verify.Passes} passes):");
        foreach (string name in PartTimer.Names)
        {
            long b = stepBytes[name];
            string rate = b > 0 ? $"  {b / 1e6,9:F1} MB {b / (plain[name] * 1e6),6:F1} GB/s" : p.Verify is null ? "" : new string(' ', 26);
            stdout.WriteLine(p.Verify is null ? $"  {name,-18} {plain[name],8:F3}{rate}" : $"  {name,-18} {plain[name],8:F3}{rate} | {verify[name],8:F3}");
        }
        double total = plain.Values.Sum();
        stdout.WriteLine(p.Verify is null ? $"  {"total",-18} {total,8:F3}" : $"  {"total",-18} {total,8:F3} | {verify.Values.Sum(),8:F3} ({verify.Values.Sum() / total:F2} steps)");
    }
    private readonly record struct SpecResult(double DecodeTokS, double Acceptance, double TokensPerPass, double PlainExperts, double VerifyExperts)
    {
        /// <summary>What a verify pass costs in plain decode steps (tokens per pass ÷ speed-up), given the plain tokens/s.</summary>
        public double PassCost(double plainTokS) => TokensPerPass * plainTokS / DecodeTokS;
    }

    private static Result Run(DeepSeekModel m, int promptTokens, int genTokens, int repeat, bool speculate = false, double? draftAcceptance = null, int depth = 0,
        bool readBound = false, int drafts = 1, bool profile = false)
    {
        var reads = new List<double>();
        int threads = WorkerPool.Shared.Threads;
        int[] prompt = RandomTokens(7, promptTokens, m.Config.VocabSize);
        var prefill = new List<double>();
        var decode = new List<double>();
        var logits = new float[m.Config.VocabSize];
        using InferenceSession s = m.CreateSession(Math.Min(m.Config.MaxPositionEmbeddings, depth + promptTokens + genTokens + 1 + drafts));
        FillDepth(s, depth, logits);
        int[] one = [0];
        var reference = new List<int>(); // the greedy continuation (the first run's), which speculation must reproduce
        var specDecode = new List<double>();
        double accepted = 0, drafted = 0, passes = 0, produced = 0;
        // One untimed run first, as llama-bench warms up: a process's first decode run was 6–23% slower than its later
        // ones (v2-lite-8 Q4_K_M, four processes), partly in the JIT's quick first code (hot methods are recompiled
        // optimised only after a while).
        s.Cache.Truncate(depth);
        Prefill(s, prompt, logits);
        Decode(null);
        for (int run = 0; run < repeat; run++)
        {
            s.Cache.Truncate(depth); // back to the filled depth (0: empty)
            var sw = Stopwatch.StartNew();
            Prefill(s, prompt, logits);
            prefill.Add(prompt.Length == 0 ? 0 : prompt.Length / sw.Elapsed.TotalSeconds); // no prompt: decode from an empty cache (llama-bench tg)
            if (readBound && run == 0) reads.Add(ReadBandwidth.Measure(threads));
            sw.Restart();
            Decode(run == 0 ? reference : null);
            decode.Add(genTokens / sw.Elapsed.TotalSeconds);
            if (readBound) reads.Add(ReadBandwidth.Measure(threads));
            if (run == 0) reference.Add(DeepSeekSharp.Kernels.TopK.ArgMax(logits));
            if (!speculate) continue;
            // Alternating with the plain run above, so drift in the machine's speed hits both alike.
            var spec = Speculative(m, s, prompt, reference, drafts, draftAcceptance, new Rng(100 + (ulong)run), null);
            specDecode.Add(spec.Tokens / spec.Seconds);
            accepted += spec.Accepted; drafted += spec.Drafts; passes += spec.Passes; produced += spec.Tokens;
        }
        Profile? parts = profile ? TimeParts(m, s, depth, prompt, reference, speculate, drafts, draftAcceptance) : null;
        if (!speculate) return new Result(Median(prefill), Median(decode), decode, reads, Profile: parts);
        var (plainExperts, verifyExperts) = CountExperts(m, s, prompt, reference, drafts, draftAcceptance);
        return new Result(Median(prefill), Median(decode), decode, reads,
            new SpecResult(Median(specDecode), accepted / drafted, produced / passes, plainExperts, verifyExperts), parts);

        // genTokens greedy steps from the logits at hand, each token chosen also added to record where given.
        void Decode(List<int>? record)
        {
            for (int i = 0; i < genTokens; i++)
            {
                one[0] = DeepSeekSharp.Kernels.TopK.ArgMax(logits);
                record?.Add(one[0]);
                s.Forward(one, logits);
            }
        }
    }

    /// <summary>Time to the first token of a prompt that shares <paramref name="prefix"/> tokens with an earlier one:
    /// cold (the whole prompt prefilled) and warm (the shared blocks restored from a <see cref="Inference.PrefixCache"/>),
    /// medians over runs; the warm logits must equal the cold ones bit for bit.</summary>
    private static (double Cold, double Warm, int Cached) FirstTokenTimes(DeepSeekModel m, int prefix, int repeat)
    {
        int[] prompt = RandomTokens(11, prefix + 16, m.Config.VocabSize);
        int capacity = Math.Min(m.Config.MaxPositionEmbeddings, prompt.Length);
        if (prompt.Length > capacity) throw new ArgumentException($"--prefix-tokens {prefix} + 16 exceeds max_position_embeddings ({m.Config.MaxPositionEmbeddings})");
        using var cache = Inference.PrefixCache.For(m, (long)(prefix / Inference.PrefixCache.DefaultBlockSize + 1) * Inference.PrefixCache.DefaultBlockSize
            * (m.Config.NLayers + m.MtpLayers) * m.Config.LatentCacheWidth * sizeof(float));
        using InferenceSession s = m.CreateSession(capacity);
        var cold = new float[m.Config.VocabSize];
        var warm = new float[m.Config.VocabSize];
        var coldTimes = new List<double>();
        var warmTimes = new List<double>();
        int cached = 0;
        for (int run = 0; run < repeat; run++)
        {
            s.Reset();
            var sw = Stopwatch.StartNew();
            Prefill(s, prompt, cold);
            DeepSeekSharp.Kernels.TopK.ArgMax(cold);
            coldTimes.Add(sw.Elapsed.TotalSeconds);
            cache.Store(prompt.AsSpan(0, prefix), prefix, s.Cache, null);
            s.Reset();
            sw.Restart();
            cached = cache.Restore(prompt, prompt.Length - 1, s.Cache, null);
            for (int start = cached; start < prompt.Length; start += 512)
                s.Forward(prompt.AsSpan(start, Math.Min(512, prompt.Length - start)), warm, allPositions: false);
            DeepSeekSharp.Kernels.TopK.ArgMax(warm);
            warmTimes.Add(sw.Elapsed.TotalSeconds);
            if (!cold.AsSpan().SequenceEqual(warm)) throw new InvalidOperationException("the warm prompt's logits differ from the cold one's");
        }
        return (Median(coldTimes), Median(warmTimes), cached);
    }

    private static Inference.Constraints.OutputFormat ConstraintFormat(string value)
    {
        if (value == "json_object") return Inference.Constraints.OutputFormat.JsonObject;
        if (!File.Exists(value)) throw new ArgumentException($"--constrain takes json_object or a JSON-schema file; '{value}' is neither");
        return Inference.Constraints.OutputFormat.JsonSchema(JsonDocument.Parse(File.ReadAllText(value)).RootElement.Clone());
    }

    /// <summary>Sampled decoding (temperature 1, the same seed) after the same prefill, without and with the output
    /// format's grammar, alternating run by run; medians of tokens/s. A grammar that completes before the run ends is
    /// started again, so every run decodes the same number of tokens. Also the share of steps whose drawn token the
    /// grammar refused (those compute the allowed set).</summary>
    private static (double Free, double Constrained, double MaskedSteps) ConstrainedDecode(DeepSeekModel m, Tokenizer tokenizer,
        Inference.Constraints.OutputFormat format, int promptTokens, int genTokens, int repeat)
    {
        int[] prompt = RandomTokens(7, promptTokens, m.Config.VocabSize); // Run's prompt
        Inference.Constraints.TokenGrammar grammar = format.Bind(tokenizer, m.Config.VocabSize, tokenizer.EosId is { } e ? [e] : []);
        var logits = new float[m.Config.VocabSize];
        using InferenceSession s = m.CreateSession(Math.Min(m.Config.MaxPositionEmbeddings, prompt.Length + genTokens + 2));
        int[] one = [0];
        var free = new List<double>();
        var constrained = new List<double>();
        long steps = 0, masked = 0;
        for (int run = 0; run < repeat; run++)
            foreach (bool constrain in (bool[])[false, true])
            {
                s.Reset();
                Prefill(s, prompt, logits);
                var chain = new Inference.Sampling.SamplerChain(new Inference.Sampling.SamplingOptions { Seed = 5 + (ulong)run }, m.Config.VocabSize);
                Inference.Constraints.GrammarMatcher? matcher = constrain ? grammar.NewMatcher() : null;
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < genTokens; i++)
                {
                    int token = chain.Sample(logits, matcher, genTokens - i - 1);
                    if (matcher is not null)
                    {
                        steps++;
                        if (grammar.IsEos(token) || !matcher.TryAccept(token)) matcher = grammar.NewMatcher(); // complete: start another
                    }
                    one[0] = token;
                    s.Forward(one, logits);
                }
                (constrain ? constrained : free).Add(genTokens / sw.Elapsed.TotalSeconds);
                if (constrain) masked += chain.MaskedDraws;
            }
        return (Median(free), Median(constrained), steps == 0 ? 0 : (double)masked / steps);
    }

    private readonly record struct SpecRun(int Tokens, double Seconds, int Drafts, int Accepted, int Passes);

    /// <summary>Greedy decoding with speculation after the same prefill: each pass runs the next token and
    /// <paramref name="drafts"/> drafts of the tokens after it (the MTP module's, chained; or with
    /// <paramref name="draftAcceptance"/> each the reference token with that probability and a wrong one otherwise);
    /// every token must equal the plain run's.</summary>
    private static SpecRun Speculative(DeepSeekModel m, InferenceSession s, int[] prompt, List<int> reference, int drafts, double? draftAcceptance, Rng rng,
        IPassObserver? verifyObserver)
    {
        int vocab = m.Config.VocabSize, goal = reference.Count - 1;
        var logits = new float[vocab];
        var cached = new List<int>(s.Capacity);
        s.Reset();
        var speculator = new DeepSeekSharp.Inference.Speculator(s);
        speculator.KeepPrefix(0, catchUp: true);
        for (int start = 0; start < prompt.Length; start += 512)
        {
            ReadOnlySpan<int> part = prompt.AsSpan(start, Math.Min(512, prompt.Length - start));
            s.Forward(part, logits, allPositions: false);
            cached.AddRange(part);
            speculator.Prefilled(part);
        }
        int start0 = prompt.Length; // reference[i] is the token at position start0 + i
        Func<int, int, int>? choose = draftAcceptance is { } p
            ? (position, _) => rng.NextDouble() < p ? reference[position - start0] : (reference[position - start0] + 1) % vocab
            : null;
        int[] pass = new int[1 + drafts];
        int next = DeepSeekSharp.Kernels.TopK.ArgMax(logits), produced = 1, drafted = 0, accepted = 0, passes = 0;
        var sw = Stopwatch.StartNew();
        while (produced < goal)
        {
            int k = Math.Min(drafts, goal - produced); // the reference ends at goal
            pass[0] = next;
            speculator.Draft(cached, next, pass.AsSpan(1, k), choose);
            s.Observer = verifyObserver;
            verifyObserver?.BeginPass();
            ReadOnlySpan<float> rows = speculator.Verify(pass.AsSpan(0, 1 + k));
            verifyObserver?.EndPass();
            s.Observer = null;
            cached.Add(next);
            passes++;
            drafted += k;
            int j = 1;
            for (; j <= k; j++)
            {
                int token = DeepSeekSharp.Kernels.TopK.ArgMax(rows.Slice((j - 1) * vocab, vocab));
                if (token != reference[produced]) throw new InvalidOperationException($"speculative decoding diverged from plain decoding at token {produced}");
                produced++;
                if (token != pass[j]) { next = token; break; }
                accepted++;
                cached.Add(token);
            }
            if (j <= k)
            {
                s.Cache.Truncate(cached.Count);
                speculator.Accepted(j - 1);
                continue;
            }
            next = DeepSeekSharp.Kernels.TopK.ArgMax(rows.Slice(k * vocab, vocab));
            produced++;
            if (produced <= goal && next != reference[produced - 1]) throw new InvalidOperationException($"speculative decoding diverged from plain decoding at token {produced - 1}");
        }
        return new SpecRun(produced - 1, sw.Elapsed.TotalSeconds, drafted, accepted, passes);
    }

    /// <summary>Distinct routed experts per MoE layer and forward pass: plain decoding (one token) against
    /// speculative verification (two tokens, which may route to different experts and so read more weights).</summary>
    private static (double Plain, double Verify) CountExperts(DeepSeekModel m, InferenceSession s, int[] prompt, List<int> reference, int drafts, double? draftAcceptance)
    {
        if (m.Config.NRoutedExperts == 0) return (0, 0);
        var plain = new ExpertCounter(m.Config);
        Replay(m, s, 0, prompt, reference, plain); // speculation is measured from an empty cache
        var verify = new ExpertCounter(m.Config);
        Speculative(m, s, prompt, reference, drafts, draftAcceptance, new Rng(100), verify);
        return (plain.Mean, verify.Mean);
    }

    private sealed class ExpertCounter(ModelConfig c) : IPassObserver
    {
        private readonly bool[,] _used = new bool[c.NLayers, Math.Max(1, c.NRoutedExperts)];
        private long _distinct, _layerPasses;

        public double Mean => _layerPasses == 0 ? 0 : (double)_distinct / _layerPasses;

        public void OnRouting(int layer, int position, ReadOnlySpan<int> experts, ReadOnlySpan<float> weights)
        {
            foreach (int e in experts) _used[layer, e] = true;
        }

        public void BeginPass() { }

        public void EndPass()
        {
            for (int l = 0; l < c.NLayers; l++)
            {
                if (!c.IsMoeLayer(l)) continue;
                _layerPasses++;
                for (int e = 0; e < c.NRoutedExperts; e++)
                    if (_used[l, e]) { _distinct++; _used[l, e] = false; }
            }
        }
    }

    private static double Median(List<double> v)
    {
        v.Sort();
        return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
    }

    /// <summary>Weight bytes one decoded token reads: one embedding row, every non-expert matrix, and per MoE layer
    /// the router, the shared experts and num_experts_per_tok routed experts (of average size).</summary>
    internal static long ActiveBytesPerToken(DeepSeekModel m) => PartBytesPerToken(m).Values.Sum();

    /// <summary><see cref="ActiveBytesPerToken"/> by the part of a step that reads them (<see cref="PartTimer.Names"/>):
    /// the embedding row, q and kv_a (q_kv_projections), kv_b (attention: W_UK and W_UV), o (output_projection), the
    /// router, the shared and chosen routed experts, the dense MLPs, the head; the norms read no matrix.</summary>
    internal static Dictionary<string, long> PartBytesPerToken(DeepSeekModel m)
    {
        ModelWeights w = m.Weights;
        long[] bytes = new long[PartTimer.Names.Length];
        bytes[PartTimer.Embedding] = w.Embed.RowBytes;
        bytes[PartTimer.Head] = w.Head.Bytes;
        foreach (BlockWeights b in w.Blocks)
        {
            AttentionWeights a = b.Attn;
            bytes[PartTimer.Projections] += a.Q.Matrices().Sum(x => x.Bytes) + a.WkvA.Bytes;
            bytes[PartTimer.Attention] += a.WkvB.Bytes;
            bytes[PartTimer.OutputProjection] += a.Wo.Bytes;
            switch (b.Ffn)
            {
                case MlpWeights mlp:
                    bytes[PartTimer.Mlp] += mlp.Matrices().Sum(x => x.Bytes);
                    break;
                case MoeWeights moe:
                    bytes[PartTimer.Router] += moe.Router.Bytes;
                    bytes[PartTimer.Experts] += (moe.Shared?.Matrices().Sum(x => x.Bytes) ?? 0)
                        + moe.Experts.Sum(e => e.Matrices().Sum(x => x.Bytes)) / moe.Experts.Length * m.Config.NActivatedExperts;
                    break;
            }
        }
        return PartTimer.ByName(i => bytes[i]);
    }

    /// <summary>VmHWM from /proc/self/status (peak resident set), or the current working set elsewhere.</summary>
    internal static long PeakRss()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line[6..].Trim().Split(' ')[0]) * 1024;
        }
        catch (IOException) { }
        return Environment.WorkingSet;
    }
}
