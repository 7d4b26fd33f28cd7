using System.Text.Json;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Model;
using DeepSeekSharp.Training;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Tests.Training;

/// <summary>R1's RL stage on a tiny random model with R1's tokenizer and template: GRPO raises the reward it is given,
/// skips groups that carry no signal, is deterministic, resumes exactly, and refuses a model that cannot think.</summary>
public class GrpoTrainerTests
{
    private static string Assets(params string[] p) => Path.Combine([AppContext.BaseDirectory, "assets", "tokenizers", .. p]);

    /// <summary>A random V3-shaped model (MLA with q-LoRA, MoE with a shared expert, MTP) with an R1 tokenizer.</summary>
    internal static void TinyR1Model(string dir, ulong seed = 3)
    {
        using JsonDocument v3 = JsonDocument.Parse(File.ReadAllText(Assets("deepseek-v3", "tokenizer.json")));
        string template = File.ReadAllText(Assets("deepseek-r1", "chat_template.reconstructed.jinja")).Trim();
        R1Data.WriteTokenizer(dir, Arithmetic.Generate(Split.Train, 200, seed: 1), 300, v3.RootElement.GetProperty("pre_tokenizer"), template);
        int vocab = DeepSeekSharp.Text.Tokenizer.Load(dir).VocabSize;
        ModelConfig c = HfConfig.Parse($$"""
            {"model_type": "deepseek_v3", "vocab_size": {{vocab}}, "hidden_size": 32, "intermediate_size": 48, "moe_intermediate_size": 16,
             "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2, "n_routed_experts": 4, "n_shared_experts": 1,
             "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
             "norm_topk_prob": true, "routed_scaling_factor": 2.5, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
             "qk_rope_head_dim": 8, "v_head_dim": 8, "max_position_embeddings": 256, "num_nextn_predict_layers": 1,
             "bos_token_id": 0, "eos_token_id": 1}
            """);
        var ps = new ParameterSet(c);
        ps.Initialize(seed);
        Checkpoint.ExportModel(ps, dir, tokenizerDir: null);
    }

    /// <summary>The share of digits in a reply: a reward every group disagrees on.</summary>
    private static double Digits(string text, Problem _) => text.Length == 0 ? 0 : (double)text.Count(char.IsAsciiDigit) / text.Length;

    private static readonly GrpoConfig Small = new()
    {
        Steps = 30, PromptsPerStep = 3, GroupSize = 6, MaxTokens = 10, Lr = 1e-2, WarmupSteps = 1, MicroBatch = 7,
        EvalSamples = 0, CheckpointInterval = 4, Grpo = new GrpoOptions { Beta = 0.02, Normalization = GrpoNormalization.Token },
    };

    [Fact]
    public void Grpo_RaisesTheRewardItIsGiven()
    {
        using var dir = new TempDir();
        TinyR1Model(dir.File("init"));
        var t = new GrpoTrainer(Small, dir.File("init"), dir.File("run")) { Reward = Digits };
        t.Run();
        double first = t.History.Take(3).Average(m => m.Reward), last = t.History.TakeLast(3).Average(m => m.Reward);
        Assert.True(last > first + 0.15, $"reward {first:F3} → {last:F3}");
        Assert.True(t.History[^1].Kl > 0, "the policy moved away from the reference");
        Assert.Contains(t.History, m => m.Groups > 0);
    }

    [Fact]
    public void GroupsWhoseRewardsAreAllEqual_AreSkipped_AndLeaveTheWeightsAlone()
    {
        using var dir = new TempDir();
        TinyR1Model(dir.File("init"));
        var t = new GrpoTrainer(Small with { Steps = 2 }, dir.File("init"), dir.File("run")) { Reward = (_, _) => 0.5 };
        float[] before = [.. t.Parameters.Values];
        t.Run();
        Assert.All(t.History, m => { Assert.Equal(0, m.Groups); Assert.Equal(Small.PromptsPerStep, m.Skipped); });
        Assert.Equal(before, t.Parameters.Values);
    }

    [Fact]
    public void AStoppedRun_ResumesToTheSameWeights_AsAnUninterruptedOne()
    {
        using var dir = new TempDir();
        TinyR1Model(dir.File("init"));
        GrpoConfig cfg = Small with { Steps = 6, CheckpointInterval = 2 };
        var whole = new GrpoTrainer(cfg, dir.File("init"), dir.File("whole")) { Reward = Digits };
        whole.Run();

        using var cancel = new CancellationTokenSource();
        var first = new GrpoTrainer(cfg, dir.File("init"), dir.File("parts")) { Reward = Digits };
        first.Run(m => { if (m.Step == 2) cancel.Cancel(); }, cancel.Token);
        Assert.Equal(2, first.Step);
        var second = new GrpoTrainer(cfg, dir.File("init"), dir.File("parts")) { Reward = Digits };
        Assert.NotNull(second.ResumedFrom);
        second.Run();
        Assert.Equal(whole.Parameters.Values, second.Parameters.Values);
        Assert.Equal(whole.History.Select(m => m.Reward), second.History.Select(m => m.Reward));

        // Other settings in the same folder are refused, not mixed in.
        var e = Assert.Throws<InvalidDataException>(() => new GrpoTrainer(cfg with { Lr = 1e-4 }, dir.File("init"), dir.File("parts")));
        Assert.Contains("other settings", e.Message);
    }

    [Fact]
    public void AModelWhoseTokenizerCannotThink_IsRefused()
    {
        using var dir = new TempDir();
        TinyR1Model(dir.File("init"));
        foreach (string f in new[] { "tokenizer.json", "tokenizer_config.json" }) File.Copy(Assets("deepseek-v3", f), Path.Combine(dir.File("init"), f), overwrite: true);
        var e = Assert.Throws<InvalidDataException>(() => new GrpoTrainer(Small, dir.File("init"), dir.File("run")));
        Assert.Contains("no <think> token", e.Message);
    }
}
