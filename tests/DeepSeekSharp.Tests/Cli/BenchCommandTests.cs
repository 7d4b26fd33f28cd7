using System.Text.Json;

namespace DeepSeekSharp.Tests.Cli;

/// <summary><c>dss bench</c> on a golden checkpoint: the JSON fields the README documents, and clear errors for bad
/// options. Speeds are only checked for being measured (positive) and consistent with each other, never against a
/// threshold: timing belongs in benchmarks. No <c>--threads</c> here, which would resize the process-wide pool
/// under other tests.</summary>
public class BenchCommandTests
{
    [Theory]
    [InlineData(null)]
    [InlineData("q8_0")]
    public void Bench_Json_ReportsEveryFieldConsistently(string? quantize)
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        List<string> args = ["--model", g.Directory, "--prompt-tokens", "9", "--gen-tokens", "5", "--repeat", "2"];
        if (quantize is not null) args.AddRange(["--quantize", quantize]);
        JsonElement j = BenchJson([.. args]);

        Assert.Equal(9, j.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(5, j.GetProperty("gen_tokens").GetInt32());
        Assert.Equal(quantize is null ? "stored" : "Q8_0", j.GetProperty("format").GetString());
        double prefill = j.GetProperty("prefill_tok_s").GetDouble(), decode = j.GetProperty("decode_tok_s").GetDouble();
        long active = j.GetProperty("active_bytes_per_token").GetInt64(), weights = j.GetProperty("weight_bytes").GetInt64();
        Assert.True(prefill > 0 && double.IsFinite(prefill), $"prefill {prefill}");
        Assert.True(decode > 0 && double.IsFinite(decode), $"decode {decode}");
        Assert.InRange(active, 1, weights); // a token reads part of the weights (the MoE's chosen experts)
        Assert.True(active < weights, "v3-tiny routes to some experts, so a token reads less than all weights");
        Assert.Equal(active * decode / 1e9, j.GetProperty("decode_gb_s").GetDouble(), 1e-9);
        Assert.True(j.GetProperty("peak_rss_bytes").GetInt64() > weights);
        Assert.True(j.GetProperty("load_s").GetDouble() >= 0);
    }

    [Fact]
    public void Bench_Cpu_SaysWhichVectorPathsRun()
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "--cpu");
        Assert.True(code == 0, stderr);
        Assert.Equal($"kernel paths: {DeepSeekSharp.Kernels.KernelPaths.Describe()}", stdout.Trim());
    }

    /// <summary>--depth: decode after that many cached positions, the cache a token reads counted in its bytes.</summary>
    [Fact]
    public void Bench_Depth_DecodesAfterTheCachedPositions_AndCountsTheCacheItReads()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        JsonElement j = BenchJson("--model", g.Directory, "--prompt-tokens", "0", "--gen-tokens", "4", "--repeat", "1", "--depth", "40");
        JsonElement config = JsonDocument.Parse(File.ReadAllText(Path.Combine(g.Directory, "config.json"))).RootElement;
        long perPosition = config.GetProperty("num_hidden_layers").GetInt64()
            * (config.GetProperty("kv_lora_rank").GetInt64() + config.GetProperty("qk_rope_head_dim").GetInt64()) * sizeof(float);
        Assert.Equal(40, j.GetProperty("depth").GetInt32());
        Assert.Equal((40 + 2) * perPosition, j.GetProperty("cache_bytes_per_token").GetInt64()); // positions 40..43: 42 on average
        Assert.True(j.GetProperty("decode_tok_s").GetDouble() > 0);
        Assert.Equal("f32", j.GetProperty("cache_type").GetString());

        // A bfloat16 cache: filled to the depth the same way, half the bytes a token reads from it.
        JsonElement half = BenchJson("--model", g.Directory, "--prompt-tokens", "0", "--gen-tokens", "4", "--repeat", "1", "--depth", "40", "--cache-type", "bf16");
        Assert.Equal("bf16", half.GetProperty("cache_type").GetString());
        Assert.Equal((40 + 2) * perPosition / 2, half.GetProperty("cache_bytes_per_token").GetInt64());
        var badType = CliRunner.Run("bench", "--model", g.Directory, "--cache-type", "f16");
        Assert.Equal(1, badType.Code);
        Assert.Contains("'f16' not recognized", badType.Stderr);

        var negative = CliRunner.Run("bench", "--model", g.Directory, "--depth", "-1");
        Assert.Equal(1, negative.Code);
        Assert.Contains("--depth must be 0 or more", negative.Stderr);
        var tooDeep = CliRunner.Run("bench", "--model", g.Directory, "--depth", "100000000");
        Assert.Equal(1, tooDeep.Code);
        Assert.Contains("exceeds max_position_embeddings", tooDeep.Stderr);
    }

    [Fact]
    public void Bench_Speculative_ReportsAcceptanceAndExpertReads()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        JsonElement spec = BenchJson("--model", g.Directory, "--prompt-tokens", "7", "--gen-tokens", "20", "--repeat", "1",
            "--speculative", "mtp", "--draft-acceptance", "1").GetProperty("speculative");
        Assert.Equal(1.0, spec.GetProperty("acceptance").GetDouble()); // every draft is the greedy token: all accepted
        Assert.Equal(2.0, spec.GetProperty("tokens_per_pass").GetDouble(), 1e-9);
        Assert.True(spec.GetProperty("decode_tok_s").GetDouble() > 0);
        double one = spec.GetProperty("plain_experts_per_layer").GetDouble(), two = spec.GetProperty("verify_experts_per_layer").GetDouble();
        int k = JsonDocument.Parse(File.ReadAllText(Path.Combine(g.Directory, "config.json"))).RootElement.GetProperty("num_experts_per_tok").GetInt32();
        Assert.Equal(k, one); // one token reads exactly its k experts
        Assert.InRange(two, k, 2 * k); // two tokens share some or none

        JsonElement chained = BenchJson("--model", g.Directory, "--prompt-tokens", "7", "--gen-tokens", "19", "--repeat", "1",
            "--speculative", "mtp", "--speculative-tokens", "3", "--draft-acceptance", "1").GetProperty("speculative");
        Assert.Equal(1.0, chained.GetProperty("acceptance").GetDouble());
        Assert.Equal(3, chained.GetProperty("drafts_per_pass").GetInt32());
        double cost = chained.GetProperty("pass_cost_steps").GetDouble(); // tokens per pass ÷ speed-up
        Assert.Equal(chained.GetProperty("tokens_per_pass").GetDouble() / chained.GetProperty("speedup").GetDouble(), cost, 1e-9);
        Assert.Equal(19.0 / 5, chained.GetProperty("tokens_per_pass").GetDouble(), 1e-9); // 4 + 4 + 4 + 4 + 3: the last pass drafts 2
        Assert.InRange(chained.GetProperty("verify_experts_per_layer").GetDouble(), two, 4 * k);

        JsonElement none = BenchJson("--model", g.Directory, "--prompt-tokens", "7", "--gen-tokens", "20", "--repeat", "1",
            "--speculative", "mtp", "--draft-acceptance", "0").GetProperty("speculative");
        Assert.Equal(0.0, none.GetProperty("acceptance").GetDouble());
        Assert.Equal(1.0, none.GetProperty("tokens_per_pass").GetDouble(), 1e-9);
    }

    [Fact]
    public void Bench_PrefixTokens_TimesTheFirstTokenColdAndWarm()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        JsonElement p = BenchJson("--model", g.Directory, "--prompt-tokens", "4", "--gen-tokens", "2", "--repeat", "1", "--prefix-tokens", "100")
            .GetProperty("prefix_cache");
        Assert.Equal(100, p.GetProperty("prefix_tokens").GetInt32());
        Assert.Equal(64, p.GetProperty("cached_tokens").GetInt32()); // whole blocks of 64 only
        Assert.True(p.GetProperty("cold_ttft_ms").GetDouble() > 0 && p.GetProperty("warm_ttft_ms").GetDouble() > 0);
    }

    [Theory]
    [InlineData("v2-lite-tiny", new[] { "--speculative", "mtp" }, "no MTP module")]
    [InlineData("v3-tiny", new[] { "--speculative", "eagle" }, "--speculative 'eagle'")]
    [InlineData("v3-tiny", new[] { "--draft-acceptance", "0.5" }, "needs --speculative mtp")]
    [InlineData("v3-tiny", new[] { "--speculative", "mtp", "--draft-acceptance", "1.5" }, "--draft-acceptance must be in [0, 1]")]
    [InlineData("v3-tiny", new[] { "--speculative", "mtp", "--speculative-tokens", "0" }, "--speculative-tokens must be in [1, 8]")]
    public void Bench_BadSpeculationOptions_FailNamingTheProblem(string model, string[] options, string message)
    {
        var (code, _, stderr) = CliRunner.Run(["bench", "--model", GoldenCase.DataPath(model), "--gen-tokens", "4", "--repeat", "1", .. options]);
        Assert.Equal(1, code);
        Assert.Contains(message, stderr);
    }

    /// <summary>--profile: every part of the prompt's prefill and of a step is timed. v3-tiny has a dense first layer and
    /// two MoE layers, so the dense MLP, the router and the experts each take time; with speculation the passes
    /// verifying drafts are timed too.</summary>
    [Fact]
    public void Bench_Profile_TimesEveryPartOfThePrefill_AStep_AndAVerifyPass()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        JsonElement j = BenchJson("--model", g.Directory, "--prompt-tokens", "3", "--gen-tokens", "6", "--repeat", "1", "--profile",
            "--speculative", "mtp", "--draft-acceptance", "0.5", "--speculative-tokens", "2");
        JsonElement p = j.GetProperty("profile");
        Assert.Equal(6, p.GetProperty("plain_steps").GetInt32()); // the six decoded tokens, each its own step
        Assert.Equal(3, p.GetProperty("verify_tokens").GetInt32());
        Assert.InRange(p.GetProperty("verify_passes").GetInt32(), 2, 5); // six tokens, one to three a pass (after the first)
        string[] parts = ["embedding", "q_kv_projections", "attention", "output_projection", "router", "experts", "dense_mlp", "norms_residuals", "head"];
        foreach (string kind in new[] { "prefill_ms", "plain_step_ms", "verify_pass_ms" })
        {
            JsonElement ms = p.GetProperty(kind);
            Assert.Equal(parts.Order(), ms.EnumerateObject().Select(x => x.Name).Order());
            foreach (string part in parts) Assert.True(ms.GetProperty(part).GetDouble() > 0, $"{kind}.{part} = {ms.GetProperty(part).GetDouble()}");
        }

        // What each part of a step reads: v3-tiny's bf16 weights from its config (hidden 64, vocabulary 256), the
        // attention's with the cache a step reads, the parts together the bytes a token reads.
        JsonElement config = JsonDocument.Parse(File.ReadAllText(Path.Combine(g.Directory, "config.json"))).RootElement;
        long hidden = config.GetProperty("hidden_size").GetInt64(), vocab = config.GetProperty("vocab_size").GetInt64();
        long moeInter = config.GetProperty("moe_intermediate_size").GetInt64(), inter = config.GetProperty("intermediate_size").GetInt64();
        long chosen = config.GetProperty("num_experts_per_tok").GetInt64(), shared = config.GetProperty("n_shared_experts").GetInt64();
        long dense = config.GetProperty("first_k_dense_replace").GetInt64(), layers = config.GetProperty("num_hidden_layers").GetInt64();
        JsonElement bytes = p.GetProperty("plain_step_bytes");
        Assert.Equal(parts.Order(), bytes.EnumerateObject().Select(x => x.Name).Order());
        Assert.Equal(hidden * 2, bytes.GetProperty("embedding").GetInt64());
        Assert.Equal(vocab * hidden * 2, bytes.GetProperty("head").GetInt64());
        Assert.Equal(dense * 3 * inter * hidden * 2, bytes.GetProperty("dense_mlp").GetInt64());
        Assert.Equal((layers - dense) * (chosen + shared) * 3 * moeInter * hidden * 2, bytes.GetProperty("experts").GetInt64());
        Assert.Equal(0, bytes.GetProperty("norms_residuals").GetInt64());
        Assert.Equal(j.GetProperty("active_bytes_per_token").GetInt64(), bytes.EnumerateObject().Sum(x => x.Value.GetInt64()));
        long kvB = config.GetProperty("num_attention_heads").GetInt64() * (config.GetProperty("qk_nope_head_dim").GetInt64()
            + config.GetProperty("v_head_dim").GetInt64()) * config.GetProperty("kv_lora_rank").GetInt64() * 2;
        Assert.Equal(layers * kvB + j.GetProperty("cache_bytes_per_token").GetInt64(), bytes.GetProperty("attention").GetInt64());

        var (code, stdout, stderr) = CliRunner.Run("bench", "--model", g.Directory, "--prompt-tokens", "0", "--gen-tokens", "3", "--repeat", "1", "--profile");
        Assert.True(code == 0, stderr);
        Assert.Contains("ms per decode step (3 steps):", stdout);
        Assert.Contains("  experts ", stdout);
        Assert.Matches(@"\n  head +[0-9.]+ +[0-9.]+ MB +[0-9.]+ GB/s", stdout);
        Assert.Matches(@"\n  norms_residuals +[0-9.]+\r?\n", stdout); // reads no matrix: no rate
        Assert.DoesNotContain("verifying", stdout);
        Assert.DoesNotContain("ms per prefill", stdout); // no prompt, nothing to time

        (code, stdout, stderr) = CliRunner.Run("bench", "--model", g.Directory, "--prompt-tokens", "5", "--gen-tokens", "2", "--repeat", "1", "--profile");
        Assert.True(code == 0, stderr);
        Assert.Contains("ms per prefill of 5 tokens (1 pass):", stdout);
    }

    [Fact]
    public void Bench_EmptyPrompt_DecodesFromAnEmptyCache()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        JsonElement j = BenchJson("--model", g.Directory, "--prompt-tokens", "0", "--gen-tokens", "3", "--repeat", "1");
        Assert.Equal(0, j.GetProperty("prefill_tok_s").GetDouble());
        Assert.True(j.GetProperty("decode_tok_s").GetDouble() > 0);
    }

    [Theory]
    [InlineData("--prompt-tokens", "-1", "--prompt-tokens must be 0 or more")]
    [InlineData("--gen-tokens", "0", "--gen-tokens must be 1 or more")]
    [InlineData("--repeat", "0", "--repeat must be 1 or more")]
    public void Bench_BadCounts_FailWithTheOptionNamed(string option, string value, string message)
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        var (code, stdout, stderr) = CliRunner.Run("bench", "--model", g.Directory, option, value);
        Assert.Equal(1, code);
        Assert.Contains(message, stderr);
        Assert.Equal("", stdout);
    }

    [Fact]
    public void Bench_PromptPastTheContext_FailsWithTheLimit()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny"); // max_position_embeddings 128
        var (code, _, stderr) = CliRunner.Run("bench", "--model", g.Directory, "--prompt-tokens", "200", "--gen-tokens", "4");
        Assert.Equal(1, code);
        Assert.Contains("max_position_embeddings (128)", stderr);
    }

    [Fact]
    public void Bench_WithoutModel_SaysWhatIsMissing()
    {
        var (code, _, stderr) = CliRunner.Run("bench", "--json");
        Assert.Equal(1, code);
        Assert.Contains("--model is required", stderr);
    }

    /// <summary><c>dss bench ARGS --json</c>: succeeds (else fails the test with its stderr) and prints one JSON object.</summary>
    private static JsonElement BenchJson(params string[] args)
    {
        var (code, stdout, stderr) = CliRunner.Run(["bench", .. args, "--json"]);
        Assert.True(code == 0, stderr);
        return JsonDocument.Parse(stdout).RootElement;
    }
}
