using System.Globalization;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;
using DeepSeekSharp.Training.Data;

namespace DeepSeekSharp.Training.Tasks;

/// <summary>The sizes of <c>dss train --recipe r1-tiny</c>; the defaults are the shipped model's.</summary>
public sealed record R1RecipeOptions
{
    public ulong Seed { get; init; } = 1;
    /// <summary>Cold-start examples (worked solutions of training problems).</summary>
    public int Examples { get; init; } = 60000;
    /// <summary>The share of cold-start examples with four digits (train side of the split hash): "a few" worked
    /// examples of the hard case, which GRPO then has to master.</summary>
    public double ColdStartHarderShare { get; init; } = 0.03;
    public int Vocab { get; init; } = 512;
    public int SftSteps { get; init; } = 2400;
    public int SftBatch { get; init; } = 16;
    public int SftSeqLen { get; init; } = 256;
    public double SftLr { get; init; } = 2e-3;
    public GrpoConfig Grpo { get; init; } = new();
    /// <summary>Problems per split and setting in the evaluations before and after GRPO.</summary>
    public int EvalSamples { get; init; } = 200;
    /// <summary>Reply length limit in the evaluations (a four-digit multiplication's working takes about 200 tokens).</summary>
    public int EvalMaxTokens { get; init; } = 320;

    /// <summary>DeepSeek-V3 in miniature: MLA with q-LoRA and decoupled RoPE, one dense layer then MoE layers (8
    /// routed experts, 2 per token in 2 groups, one shared, sigmoid scores with the bias rule), one MTP module.</summary>
    public string ModelJson { get; init; } = """
        {
          "model_type": "deepseek_v3", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 128,
          "num_hidden_layers": 4, "first_k_dense_replace": 1, "num_attention_heads": 4, "n_routed_experts": 8, "n_shared_experts": 1,
          "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
          "norm_topk_prob": true, "routed_scaling_factor": 2.5, "q_lora_rank": 96, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
          "qk_rope_head_dim": 16, "v_head_dim": 32, "max_position_embeddings": 512, "num_nextn_predict_layers": 1,
          "rope_theta": 10000, "rms_norm_eps": 1e-6, "bos_token_id": 0, "eos_token_id": 1
        }
        """;

    public static R1RecipeOptions Named(string name) => name switch
    {
        "r1-tiny" => new R1RecipeOptions(),
        _ => throw new ArgumentException($"unknown recipe '{name}'; recipes: r1-tiny"),
    };
}

/// <summary>One evaluation of the recipe (a file under eval/).</summary>
public sealed record RecipeEval(string Stage, string Split, double Temperature, int Samples, double Accuracy, double FormatRate,
    double MeanCompletionTokens, double MeanReasoningTokens, Dictionary<string, double> AccuracyByDigits, double? MtpDraftAgreement);

/// <summary>R1's recipe at small scale, from nothing: the arithmetic data and a tokenizer trained on it, the cold start
/// (supervised training on worked solutions), evaluations, GRPO from the cold-start model, the same evaluations, and
/// the exported model folder with its model card. Every stage writes its results atomically and is skipped when they
/// exist, and each training stage resumes from its newest checkpoint, so an interrupted recipe continues where it
/// stopped when run again.</summary>
public sealed class R1Recipe(R1RecipeOptions options, string outDir, string assets, Action<string> log)
{
    private string Path_(params string[] p) => Path.Combine([outDir, .. p]);
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public string DataDir => Path_("data");
    public string Stage1Dir => Path_("stage1");
    public string Stage2Dir => Path_("stage2");

    /// <summary>Every stage in order, each skipped when done, each training stage resumed from its newest checkpoint.
    /// Returns the exported model folder, or null when cancelled (run again to continue).</summary>
    public string? Run(Action<Trainer>? stage1Started = null, Action<StepMetrics>? sftStep = null,
        Action<GrpoTrainer>? stage2Started = null, Action<GrpoMetrics>? grpoStep = null,
        Action<string, int, int>? evalProgress = null, CancellationToken cancel = default)
    {
        Directory.CreateDirectory(outDir);
        string stamp = Path_("recipe.json"), settings = JsonSerializer.Serialize(options, Json);
        if (File.Exists(stamp) && File.ReadAllText(stamp) != settings)
            throw new InvalidDataException($"{outDir} holds a run with other recipe settings (see {stamp}); use another output folder");
        AtomicFile.WriteText(stamp, settings);
        PrepareData();
        string? s1 = Stage1Model();
        if (s1 is null)
        {
            var trainer = new Trainer(SftConfig());
            stage1Started?.Invoke(trainer);
            trainer.Run(sftStep, null, cancel);
            if (cancel.IsCancellationRequested) { trainer.SaveCheckpoint(); return null; }
            s1 = Stage1Model() ?? throw new InvalidOperationException("stage 1 ended without its final checkpoint");
        }
        List<RecipeEval> before = Evaluate("stage1", s1, evalProgress);
        string? s2 = Stage2Model();
        if (s2 is null)
        {
            var grpo = new GrpoTrainer(options.Grpo with { Seed = options.Seed }, s1, Stage2Dir);
            stage2Started?.Invoke(grpo);
            grpo.Run(grpoStep, cancel);
            if (cancel.IsCancellationRequested) { grpo.SaveCheckpoint(); return null; }
            s2 = Stage2Model() ?? throw new InvalidOperationException("stage 2 ended without its final checkpoint");
        }
        List<RecipeEval> after = Evaluate("grpo", s2, evalProgress);
        Export(s2, before, after);
        return ModelDir;
    }
    public string ModelDir => Path_("model");

    /// <summary>Problems, tokenizer, SFT examples and the token shard (skipped when the shard exists).</summary>
    public string PrepareData()
    {
        string shard = Path_("data", "sft.tokens");
        if (File.Exists(shard)) return shard;
        Directory.CreateDirectory(DataDir);
        using JsonDocument v3 = JsonDocument.Parse(File.ReadAllText(Path.Combine(assets, "deepseek-v3", "tokenizer.json")));
        string template = File.ReadAllText(Path.Combine(assets, "deepseek-r1", "chat_template.reconstructed.jinja")).Trim();
        int harder = (int)Math.Round(options.Examples * options.ColdStartHarderShare);
        List<Problem> train = Interleave(Arithmetic.Generate(Split.Train, options.Examples - harder, options.Seed),
            harder > 0 ? Arithmetic.Generate(Split.Train, harder, options.Seed, Arithmetic.MaxTrainDigits + 1, Arithmetic.MaxTrainDigits + 1) : []);
        string tokDir = Path_("data", "tokenizer");
        R1Data.WriteTokenizer(tokDir, train.Take(5000), options.Vocab, v3.RootElement.GetProperty("pre_tokenizer"), template);
        var tokenizer = Tokenizer.Load(tokDir);
        var prep = new DataPreparation(tokenizer);
        var chat = ChatTemplate.Parse(template);
        foreach (Problem p in train)
        {
            var (prompt, completion) = R1Data.Example(p, chat);
            prep.AddPromptCompletion(prompt, completion);
        }
        prep.Write(shard);
        log($"data: {options.Examples:N0} worked solutions, {prep.TokenCount:N0} tokens, vocabulary {tokenizer.VocabSize}");
        return shard;
    }

    /// <summary>Spreads <paramref name="few"/> evenly through <paramref name="many"/> (so that the validation tail of
    /// the shard is a sample of both).</summary>
    private static List<Problem> Interleave(List<Problem> many, List<Problem> few)
    {
        var all = new List<Problem>(many.Count + few.Count);
        int f = 0;
        for (int i = 0; i < many.Count; i++)
        {
            all.Add(many[i]);
            if (f < few.Count && (long)(i + 1) * few.Count >= (long)(f + 1) * many.Count) all.Add(few[f++]);
        }
        all.AddRange(few.Skip(f));
        return all;
    }

    public TrainConfig SftConfig() => TrainConfig.Parse(JsonSerializer.Serialize(new
    {
        model = JsonDocument.Parse(options.ModelJson).RootElement,
        tokenizer = "data/tokenizer", data = new[] { "data/sft.tokens" }, validation_fraction = 0.02, out_ = "stage1",
        batch_size = options.SftBatch, seq_len = options.SftSeqLen, steps = options.SftSteps,
        lr = options.SftLr, min_lr = options.SftLr / 10, warmup_steps = 60, weight_decay = 0.1, grad_clip = 1.0,
        eval_interval = 200, eval_batches = 4, checkpoint_interval = 200, seed = options.Seed,
    }).Replace("\"out_\"", "\"out\"", StringComparison.Ordinal), outDir);

    /// <summary>The finished stage-1 checkpoint folder.</summary>
    public string? Stage1Model()
    {
        string? latest = Checkpoint.Latest(Path_("stage1", "checkpoints"));
        return latest is not null && latest.EndsWith($"step-{options.SftSteps:D6}", StringComparison.Ordinal) ? latest : null;
    }

    public string? Stage2Model()
    {
        string? latest = Checkpoint.Latest(Path_("stage2", "checkpoints"));
        return latest is not null && latest.EndsWith($"step-{options.Grpo.Steps:D6}", StringComparison.Ordinal) ? latest : null;
    }

    /// <summary>The evaluations of one model: held-out greedy and at temperature 0.6, harder, unseen phrasings.</summary>
    public List<RecipeEval> Evaluate(string stage, string modelDir, Action<string, int, int>? progress = null)
    {
        var all = new List<RecipeEval>();
        foreach (var (split, temperature) in new[] { (Split.Heldout, 0.0), (Split.Heldout, 0.6), (Split.Phrasing, 0.0), (Split.Harder, 0.0) })
        {
            string name = $"{stage}-{split.ToString().ToLowerInvariant()}-t{temperature.ToString("0.0", CultureInfo.InvariantCulture)}";
            string file = Path_("eval", name + ".json");
            if (File.Exists(file)) { all.Add(JsonSerializer.Deserialize<RecipeEval>(File.ReadAllText(file), Json)!); continue; }
            using var model = DeepSeekModel.Load(modelDir);
            var tokenizer = Tokenizer.Load(modelDir);
            using var generator = new Generator(model, tokenizer);
            var results = TaskEvaluation.Run(generator, Arithmetic.Generate(split, options.EvalSamples, seed: 7),
                new GenerationOptions { MaxTokens = options.EvalMaxTokens, Sampling = new SamplingOptions { Temperature = (float)temperature, Seed = 7 } },
                (done, total) => progress?.Invoke(name, done, total));
            EvalSummary s = EvalSummary.Of(results);
            double? mtp = split == Split.Heldout && temperature == 0 ? MtpAgreement.Measure(model, tokenizer, results.Take(50).Select(r => r.Problem), options.EvalMaxTokens) : null;
            var e = new RecipeEval(stage, split.ToString().ToLowerInvariant(), temperature, s.Count, s.Accuracy, s.FormatRate,
                s.MeanCompletionTokens, s.MeanReasoningTokens,
                s.ByDigits.ToDictionary(p => p.Key.ToString(CultureInfo.InvariantCulture), p => p.Value.Accuracy), mtp);
            Directory.CreateDirectory(Path_("eval"));
            AtomicFile.WriteText(file, JsonSerializer.Serialize(e, Json));
            log($"{name}: accuracy {e.Accuracy:P1}, well-formed {e.FormatRate:P1}{(mtp is { } m ? $", MTP draft = next greedy token {m:P1}" : "")}");
            all.Add(e);
        }
        return all;
    }

    /// <summary>The shipped folder: the final weights in BF16, config, tokenizer and a model card.</summary>
    public void Export(string from, IReadOnlyList<RecipeEval> before, IReadOnlyList<RecipeEval> after)
    {
        string tmp = ModelDir + ".tmp";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        var ps = new ParameterSet(HfConfig.Load(from));
        ps.Load(from);
        Checkpoint.ExportModel(ps, tmp, from);
        AtomicFile.WriteText(Path.Combine(tmp, "README.md"), ModelCard(before, after));
        if (Directory.Exists(ModelDir)) Directory.Delete(ModelDir, recursive: true);
        Directory.Move(tmp, ModelDir);
    }

    private string ModelCard(IReadOnlyList<RecipeEval> before, IReadOnlyList<RecipeEval> after)
    {
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        sb.AppendLine("# r1-tiny: DeepSeek-V3's architecture in miniature, taught arithmetic by R1's recipe").AppendLine();
        sb.AppendLine("A 4.9M-parameter model with MLA (q-LoRA, decoupled RoPE), one dense layer then three MoE layers (8 routed");
        sb.AppendLine("experts, 2 per token, one shared, sigmoid routing with the bias rule) and one MTP module, trained on 2 CPU");
        sb.AppendLine("cores by `dss train --recipe r1-tiny` from nothing:").AppendLine();
        sb.AppendLine(ci, $"1. **Data**: {options.Examples:N0} generated problems (addition, subtraction, multiplication by one digit; 1–3 digits, and {options.ColdStartHarderShare:P0} with 4; expressions and word problems) with worked column-by-column solutions; a {options.Vocab}-entry BPE vocabulary trained on them, digits split one per token, DeepSeek's special tokens, `<think>`/`</think>` whole, R1's chat template.");
        sb.AppendLine(ci, $"2. **Cold start**: {options.SftSteps} steps of supervised training ({options.SftBatch} × {options.SftSeqLen} tokens, loss on the reply only, MTP λ 0.3).");
        sb.AppendLine(ci, $"3. **GRPO**: {options.Grpo.Steps} steps × {options.Grpo.PromptsPerStep} problems × {options.Grpo.GroupSize} samples at temperature {options.Grpo.Temperature}, reward 1 correct / {options.Grpo.FormatReward} well-formed / 0, ε {options.Grpo.Grpo.Epsilon}, β {options.Grpo.Grpo.Beta} (k3 KL to the cold-start model), token-level normalisation, lr {options.Grpo.Lr}.");
        sb.AppendLine(ci, $"4. **Export**: weights stored in BF16. Seed {options.Seed}.").AppendLine();
        sb.AppendLine("## Measured (`dss eval`, 200 problems each, seed 7)").AppendLine();
        sb.AppendLine("| split | temperature | after cold start | after GRPO | well-formed after GRPO |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (RecipeEval a in after)
        {
            RecipeEval? b = before.FirstOrDefault(x => x.Split == a.Split && x.Temperature == a.Temperature);
            sb.AppendLine(ci, $"| {a.Split} | {a.Temperature:0.0} | {(b is null ? "" : $"{b.Accuracy:P1}")} | {a.Accuracy:P1} | {a.FormatRate:P1} |");
        }
        RecipeEval? g = after.FirstOrDefault(x => x.Split == "heldout" && x.Temperature == 0);
        if (g?.MtpDraftAgreement is { } m) sb.AppendLine().AppendLine(ci, $"The MTP module's draft equals the next greedy token {m:P1} of the time on the held-out replies.");
        sb.AppendLine().AppendLine(ci, $"Splits: `heldout` = problems of the training difficulties that training never saw; `phrasing` = held-out problems in wordings, names and sentences training never used; `harder` = held-out four-digit problems (four digits are {options.ColdStartHarderShare:P0} of the cold start and {options.Grpo.HarderShare:P0} of GRPO's problems).");
        sb.AppendLine().AppendLine("It knows arithmetic of this kind and nothing else: anything else it is asked gets an arithmetic-shaped reply.");
        return sb.ToString();
    }
}
