using System.Text.Json;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Text;
using DeepSeekSharp.Training;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Tests.Training;

/// <summary>The whole R1 recipe at toy size: data, tokenizer, cold start, evaluations, GRPO, export; interrupted
/// after the cold start it continues where it stopped; what it exports loads as an R1-format model.</summary>
public class R1RecipeTests
{
    private static string Assets() => Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers");

    private static readonly R1RecipeOptions Toy = new()
    {
        Examples = 300, Vocab = 300, SftSteps = 6, SftBatch = 2, SftSeqLen = 256, EvalSamples = 3, EvalMaxTokens = 12,
        Grpo = new GrpoConfig { Steps = 2, PromptsPerStep = 2, GroupSize = 2, MaxTokens = 8, EvalSamples = 0, CheckpointInterval = 1 },
        ModelJson = """
            {"model_type": "deepseek_v3", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 48, "moe_intermediate_size": 16,
             "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2, "n_routed_experts": 4, "n_shared_experts": 1,
             "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
             "norm_topk_prob": true, "routed_scaling_factor": 2.5, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
             "qk_rope_head_dim": 8, "v_head_dim": 8, "max_position_embeddings": 256, "num_nextn_predict_layers": 1,
             "bos_token_id": 0, "eos_token_id": 1}
            """,
    };

    [Fact]
    public void TheRecipe_RunsEveryStage_ResumesAfterAnInterruption_AndExportsAnR1Model()
    {
        using var dir = new TempDir();
        var log = new List<string>();
        using var cancel = new CancellationTokenSource();
        var recipe = new R1Recipe(Toy, dir.Path, Assets(), log.Add);
        Assert.Null(recipe.Run(sftStep: m => { if (m.Step == 3) cancel.Cancel(); }, cancel: cancel.Token));
        Assert.True(File.Exists(Path.Combine(dir.Path, "data", "sft.tokens")));
        Assert.Null(recipe.Stage1Model());

        var resumedAt = new List<int>();
        string? model = new R1Recipe(Toy, dir.Path, Assets(), log.Add).Run(stage1Started: t => resumedAt.Add(t.Step));
        Assert.Equal([3], resumedAt);                       // the cold start went on from its checkpoint
        Assert.Equal(Path.Combine(dir.Path, "model"), model);
        Assert.Single(log, l => l.StartsWith("data:", StringComparison.Ordinal)); // the data was made once

        // Before and after GRPO: held-out greedy and at 0.6, unseen phrasings, harder; MTP agreement measured.
        string[] evals = Directory.GetFiles(Path.Combine(dir.Path, "eval"), "*.json").Select(Path.GetFileName).Order().ToArray()!;
        Assert.Equal(8, evals.Length);
        var e = JsonSerializer.Deserialize<JsonElement>(File.ReadAllText(Path.Combine(dir.Path, "eval", "grpo-heldout-t0.0.json")));
        Assert.Equal(3, e.GetProperty("samples").GetInt32());
        Assert.Equal(JsonValueKind.Number, e.GetProperty("mtp_draft_agreement").ValueKind);

        // The exported folder is a model with R1's tokenizer and template, weights from the last GRPO step.
        Assert.True(File.Exists(Path.Combine(model!, "README.md")));
        Tokenizer tok = Tokenizer.Load(model!);
        Assert.NotNull(tok.TryTokenToId("<think>"));
        Assert.Contains("<think>", tok.Config.ChatTemplate);
        Assert.Equal(3, tok.Encode("452", addBos: false).Length); // one token per digit
        using DeepSeekModel m = DeepSeekModel.Load(model!);
        Assert.Equal(1, m.MtpLayers);
        var last = new ParameterSet(m.Config);
        last.Load(recipe.Stage2Model()!);
        var exported = new ParameterSet(m.Config);
        exported.Load(model!);
        for (int i = 0; i < last.Values.Length; i++)
            Assert.Equal(last.Values[i], exported.Values[i], Math.Abs(last.Values[i]) / 128 + 1e-30f); // BF16: 8 significant bits

        // Another seed in the same folder is refused before anything is mixed in.
        var e2 = Assert.Throws<InvalidDataException>(() => new R1Recipe(Toy with { Seed = 2 }, dir.Path, Assets(), log.Add).Run());
        Assert.Contains("other recipe settings", e2.Message);
    }

    [Theory]
    [InlineData(1.0f, 0x3F80)]
    [InlineData(1.00390625f, 0x3F80)]   // halfway, to even
    [InlineData(1.01171875f, 0x3F82)]   // halfway, to even (up)
    [InlineData(1.0078125f, 0x3F81)]
    [InlineData(-2.5f, 0xC020)]
    public void Bf16_RoundsToNearestEven(float value, int bits) => Assert.Equal((ushort)bits, Checkpoint.ToBf16(value));

    [Theory]
    [InlineData(new[] { "train", "--recipe", "r2-huge" }, "unknown recipe 'r2-huge'")]
    [InlineData(new[] { "train" }, "give exactly one of --config FILE and --recipe NAME")]
    public void Train_RefusesAnUnknownRecipe_AndAmbiguousArguments(string[] args, string message)
    {
        var (code, _, err) = CliRunner.Run(args);
        Assert.Equal(1, code);
        Assert.Contains(message, err);
    }
}
