using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Training;

/// <summary>The settings of R1's reinforcement-learning stage (<see cref="GrpoTrainer"/>).</summary>
public sealed record GrpoConfig
{
    public int Steps { get; init; } = 120;
    /// <summary>Problems per step; each gets <see cref="GroupSize"/> sampled completions.</summary>
    public int PromptsPerStep { get; init; } = 16;
    /// <summary>The share of each step's problems with <see cref="Arithmetic.MaxTrainDigits"/> + 1 digits (training
    /// side of the split hash): RL goes past what the cold start was shown, as R1's did.</summary>
    public double HarderShare { get; init; } = 0.5;
    /// <summary>The share of each step's problems asked in varied wordings (<see cref="Arithmetic.Generate"/>'s
    /// <c>varied</c>) rather than the cold start's few templates.</summary>
    public double VariedShare { get; init; } = 0.5;
    public int GroupSize { get; init; } = 8;
    public double Temperature { get; init; } = 1.0;
    /// <summary>Completion length limit (a completion cut there is scored as written, usually 0).</summary>
    public int MaxTokens { get; init; } = 288;
    public double Lr { get; init; } = 2e-4;
    public int WarmupSteps { get; init; } = 5;
    public double WeightDecay { get; init; }
    public double GradClip { get; init; } = 1.0;
    public GrpoOptions Grpo { get; init; } = new() { Normalization = GrpoNormalization.Token };
    /// <summary>TinyZero's reward: 1 for a correct answer, this for a well-formed but wrong one, else 0.</summary>
    public double FormatReward { get; init; } = 0.1;
    /// <summary>γ of the router bias rule during RL (0 freezes the biases).</summary>
    public double BiasGamma { get; init; } = 0.001;
    /// <summary>Micro-batch rows (one completion each) per forward/backward pass.</summary>
    public int MicroBatch { get; init; } = 16;
    public ulong Seed { get; init; } = 1;
    public int EvalInterval { get; init; } = 10;
    /// <summary>Held-out and harder problems asked greedily at each evaluation.</summary>
    public int EvalSamples { get; init; } = 64;
    public int CheckpointInterval { get; init; } = 10;

    public void Validate()
    {
        static void Fail(string m) => throw new InvalidDataException("GRPO config: " + m);
        if (Steps < 1) Fail($"steps ({Steps}) must be ≥ 1");
        if (PromptsPerStep < 1) Fail($"prompts_per_step ({PromptsPerStep}) must be ≥ 1");
        if (GroupSize < 2) Fail($"group_size ({GroupSize}) must be ≥ 2: advantages are relative to the group");
        if (!(HarderShare >= 0 && HarderShare <= 1) || !(VariedShare >= 0 && VariedShare <= 1)) Fail("harder_share and varied_share must be in [0, 1]");
        if (!(Temperature > 0)) Fail($"temperature ({Temperature}) must be > 0");
        if (MaxTokens < 1) Fail($"max_tokens ({MaxTokens}) must be ≥ 1");
        if (!(Lr > 0)) Fail($"lr ({Lr}) must be > 0");
        if (!(Grpo.Epsilon > 0) || Grpo.EpsilonHigh is <= 0 || !(Grpo.Beta >= 0)) Fail("epsilon and epsilon_high must be > 0 and beta ≥ 0");
        if (MicroBatch < 1 || EvalInterval < 1 || CheckpointInterval < 1 || EvalSamples < 0) Fail("micro_batch, eval_interval and checkpoint_interval must be ≥ 1, eval_samples ≥ 0");
    }
}

/// <summary>One GRPO step's numbers (a row of grpo.csv).</summary>
public sealed record GrpoMetrics(int Step, double Reward, double Accuracy, double FormatRate, double MeanLength, double Kl, double Loss,
    int Groups, int Skipped, double GradNorm, double Seconds, double RolloutSeconds, double? HeldoutAccuracy, double? HarderAccuracy)
{
    public const string Header = "step,reward,accuracy,format_rate,mean_length,kl,loss,groups,skipped,grad_norm,seconds,rollout_seconds,heldout_accuracy,harder_accuracy";

    public string ToCsv() => string.Create(CultureInfo.InvariantCulture,
        $"{Step},{Reward:R},{Accuracy:R},{FormatRate:R},{MeanLength:R},{Kl:R},{Loss:R},{Groups},{Skipped},{GradNorm:R},{Seconds:F2},{RolloutSeconds:F2},{HeldoutAccuracy?.ToString("R", CultureInfo.InvariantCulture)},{HarderAccuracy?.ToString("R", CultureInfo.InvariantCulture)}");

    public static GrpoMetrics FromCsv(string line)
    {
        string[] f = line.Split(',');
        double D(int i) => double.Parse(f[i], CultureInfo.InvariantCulture);
        return new GrpoMetrics(int.Parse(f[0], CultureInfo.InvariantCulture), D(1), D(2), D(3), D(4), D(5), D(6),
            int.Parse(f[7], CultureInfo.InvariantCulture), int.Parse(f[8], CultureInfo.InvariantCulture), D(9), D(10), D(11), f[12].Length == 0 ? null : D(12), f[13].Length == 0 ? null : D(13));
    }
}

/// <summary>R1's second stage on the arithmetic task: each step samples G completions of P training problems from the
/// current policy through the inference engine (temperature 1), scores them with the verifier (accuracy 1, format
/// bonus), turns rewards into group-relative advantages, skips groups whose rewards are all equal, and takes one
/// AdamW step on the clipped GRPO objective with the k3 KL penalty to the frozen starting model
/// (<see cref="Grpo.Loss"/>), token-normalised over the step. The policy's log-probabilities come from
/// <see cref="TrainingModel.Step"/> (one forward without gradients, then the backward pass with each sampled token
/// weighted by −∂loss/∂log p). Deterministic for a seed and thread count; checkpoints resume exactly.</summary>
public sealed class GrpoTrainer
{
    private readonly GrpoConfig _cfg;
    private readonly ParameterSet _ps, _ref;
    private readonly Tokenizer _tokenizer;
    private readonly ChatTemplate _template;
    private readonly string _tokenizerDir, _configJson;
    private readonly Dictionary<int, (TrainingModel Policy, TrainingModel Reference)> _models = [];
    private readonly AdamW _adam;
    private readonly float[] _m, _v;
    private readonly List<GrpoMetrics> _history = [];
    private readonly Dictionary<int, int[]> _loads = [];

    /// <param name="initFrom">the stage-1 model folder: the starting policy and the frozen reference</param>
    public GrpoTrainer(GrpoConfig cfg, string initFrom, string outDir)
    {
        cfg.Validate();
        _cfg = cfg;
        ModelConfig c = HfConfig.Load(initFrom);
        _ps = new ParameterSet(c);
        _ps.Load(initFrom);
        _ref = new ParameterSet(c);
        _ref.Load(initFrom);
        _tokenizerDir = initFrom;
        _tokenizer = Tokenizer.Load(initFrom);
        TaskEvaluation.CheckReasoningTokens(_tokenizer);
        _template = ChatTemplate.Parse(_tokenizer.Config.ChatTemplate
            ?? throw new InvalidDataException($"{initFrom}: the tokenizer has no chat template"));
        _adam = new AdamW { WeightDecay = cfg.WeightDecay };
        _m = new float[_ps.Count];
        _v = new float[_ps.Count];
        Out = outDir;
        CheckpointDir = Path.Combine(outDir, "checkpoints");
        Reward = (text, p) => Arithmetic.Reward(text, p.Answer, cfg.FormatReward);
        _configJson = JsonSerializer.Serialize(cfg with { EvalInterval = 1, EvalSamples = 0, CheckpointInterval = 1, Steps = 1 }) + "|" + Path.GetFullPath(initFrom);
        string? resume = Checkpoint.Latest(CheckpointDir);
        if (resume is not null)
        {
            TrainerState state = Checkpoint.Load(resume, _ps, _m, _v);
            if (state.ConfigJson != _configJson)
                throw new InvalidDataException($"{resume}: the GRPO run in {outDir} was started with other settings or another starting model; use another output folder");
            Step = state.Step;
            string csv = Path.Combine(resume, "grpo.csv");
            if (File.Exists(csv)) _history.AddRange(File.ReadLines(csv).Skip(1).Select(GrpoMetrics.FromCsv));
            ResumedFrom = resume;
        }
    }

    public string Out { get; }
    public string CheckpointDir { get; }
    public int Step { get; private set; }
    /// <summary>The reward of a completion (its text, without end-of-sentence) to a problem; by default TinyZero's
    /// rule on the verifier: 1 correct, <see cref="GrpoConfig.FormatReward"/> well-formed, else 0.</summary>
    public Func<string, Problem, double> Reward { get; init; }
    public string? ResumedFrom { get; }
    public ParameterSet Parameters => _ps;
    public IReadOnlyList<GrpoMetrics> History => _history;

    /// <summary>Runs to <see cref="GrpoConfig.Steps"/>, checkpointing at its interval and at the end.</summary>
    public void Run(Action<GrpoMetrics>? stepDone = null, CancellationToken cancel = default)
    {
        while (Step < _cfg.Steps && !cancel.IsCancellationRequested)
        {
            GrpoMetrics m = TrainStep();
            if (_cfg.EvalSamples > 0 && (Step % _cfg.EvalInterval == 0 || Step == _cfg.Steps))
                m = m with { HeldoutAccuracy = Evaluate(Split.Heldout, _cfg.EvalSamples), HarderAccuracy = Evaluate(Split.Harder, _cfg.EvalSamples) };
            _history.Add(m);
            stepDone?.Invoke(m);
            if (Step % _cfg.CheckpointInterval == 0 || Step == _cfg.Steps) SaveCheckpoint();
        }
    }

    /// <summary>The policy as an inference model (a copy of the current weights).</summary>
    public DeepSeekModel PolicyModel() => DeepSeekModel.FromSource(_ps.Config, new ParameterSource(_ps));

    private int[] PromptIds(Problem p) => _tokenizer.Encode(R1Data.Example(p, _template).Prompt, addBos: false);

    /// <summary>Greedy accuracy of the current policy on problems of a split (the same problems every time).</summary>
    public double Evaluate(Split split, int samples)
    {
        using DeepSeekModel model = PolicyModel();
        int correct = 0;
        foreach (Problem p in Arithmetic.Generate(split, samples, seed: 1000 + _cfg.Seed))
        {
            int[] prompt = PromptIds(p);
            Rollout r = Rollouts.Sample(model, prompt, 1, new SamplingOptions { Temperature = 0 }, Math.Min(_cfg.MaxTokens, model.Config.MaxPositionEmbeddings - prompt.Length))[0];
            if (Arithmetic.Verify(Text(r), p.Answer).Correct) correct++;
        }
        return (double)correct / samples;
    }

    private string Text(Rollout r) => _tokenizer.Decode(r.Ended ? r.Ids.AsSpan(0, r.Ids.Length - 1) : r.Ids);

    private sealed record Sequence(int[] Tokens, int PromptLength, int Group)
    {
        public int Completion => Tokens.Length - PromptLength;
    }

    /// <summary>A step's problems: 1–3 digits and (<see cref="GrpoConfig.HarderShare"/>) 4 digits, each part partly
    /// (<see cref="GrpoConfig.VariedShare"/>) in varied wordings.</summary>
    private List<Problem> Problems(ulong seed)
    {
        int n = _cfg.PromptsPerStep, harder = (int)Math.Round(n * _cfg.HarderShare), h = Arithmetic.MaxTrainDigits + 1;
        var list = new List<Problem>(n);
        foreach (var (count, lo, hi, salt) in new[] { (n - harder, 0, 0, 0UL), (harder, h, h, 1UL) })
        {
            int varied = (int)Math.Round(count * _cfg.VariedShare);
            if (count - varied > 0) list.AddRange(Arithmetic.Generate(Split.Train, count - varied, seed + salt, lo, hi));
            if (varied > 0) list.AddRange(Arithmetic.Generate(Split.Train, varied, seed + salt + 2, lo, hi, varied: true));
        }
        return list;
    }

    /// <summary>One GRPO step: rollouts, rewards, advantages, one policy update.</summary>
    public GrpoMetrics TrainStep()
    {
        var clock = Stopwatch.StartNew();
        ulong stepSeed = Mix(_cfg.Seed, (ulong)Step);
        List<Problem> problems = Problems(stepSeed);
        int g = _cfg.GroupSize, maxPos = _ps.Config.MaxPositionEmbeddings;
        var sequences = new List<Sequence>();
        var advantages = new List<double[]>();
        double rewardSum = 0, lengthSum = 0;
        int correct = 0, wellFormed = 0, skipped = 0;
        using (DeepSeekModel policy = PolicyModel())
        {
            var rewards = new double[g];
            for (int i = 0; i < problems.Count; i++)
            {
                int[] prompt = PromptIds(problems[i]);
                int maxTokens = Math.Min(_cfg.MaxTokens, maxPos - prompt.Length);
                var sampling = new SamplingOptions { Temperature = (float)_cfg.Temperature, Seed = Mix(stepSeed, (ulong)i) };
                List<Rollout> group = Rollouts.Sample(policy, prompt, g, sampling, maxTokens);
                for (int j = 0; j < g; j++)
                {
                    string text = Text(group[j]);
                    var (formed, right) = Arithmetic.Verify(text, problems[i].Answer);
                    rewards[j] = Reward(text, problems[i]);
                    rewardSum += rewards[j]; lengthSum += group[j].Ids.Length;
                    if (right) correct++;
                    if (formed) wellFormed++;
                }
                if (rewards.AsSpan().IndexOfAnyExcept(rewards[0]) < 0) { skipped++; continue; } // no signal
                var adv = new double[g];
                Grpo.Advantages(rewards, adv, _cfg.Grpo.AdvantageEps);
                advantages.Add(adv);
                foreach (Rollout r in group) sequences.Add(new Sequence([.. prompt, .. r.Ids], prompt.Length, advantages.Count - 1));
            }
        }

        double rolloutSeconds = clock.Elapsed.TotalSeconds;
        int samples = problems.Count * g;
        double loss = 0, kl = 0, norm = 0;
        Array.Clear(_ps.Grads);
        foreach (int[] l in _loads.Values) Array.Clear(l);
        if (sequences.Count > 0) (loss, kl) = Update(sequences, advantages);
        if (sequences.Count > 0)
        {
            norm = _cfg.GradClip > 0 ? GradientClipping.Clip([_ps.Grads.AsMemory()], _cfg.GradClip) : GradientClipping.GlobalNorm([_ps.Grads.AsMemory()]);
            double lr = _cfg.Lr * Math.Min(1.0, (Step + 1.0) / Math.Max(1, _cfg.WarmupSteps));
            foreach (Parameter p in _ps.Tensors)
            {
                int o = (int)p.Offset;
                _adam.Step(_ps.Value(p), _ps.Grad(p), _m.AsSpan(o, p.Length), _v.AsSpan(o, p.Length), Step + 1, lr, p.Decay);
            }
            _ps.Changed();
            if (_cfg.BiasGamma > 0)
                foreach (var (layer, loads) in _loads)
                    if (!_ps.RouterBias(layer).IsEmpty) BiasBalancing.Update(_ps.RouterBias(layer), loads, (float)_cfg.BiasGamma);
        }
        Step++;
        return new GrpoMetrics(Step, rewardSum / samples, (double)correct / samples, (double)wellFormed / samples, lengthSum / samples,
            kl, loss, problems.Count - skipped, skipped, norm, clock.Elapsed.TotalSeconds, rolloutSeconds, null, null);
    }

    /// <summary>Log-probabilities of every sampled token under the policy and the reference, the GRPO gradient with
    /// respect to each, then the backward pass. Returns the loss and the mean k3 KL per token.</summary>
    private (double Loss, double Kl) Update(List<Sequence> seqs, List<double[]> advantages)
    {
        int total = seqs.Sum(s => s.Completion);
        var cur = new double[seqs.Count][];
        var reference = new double[seqs.Count][];
        // Micro-batches of rows of similar length, each padded to a multiple of 64 positions (one pair of models per padded length).
        int[] order = [.. Enumerable.Range(0, seqs.Count).OrderBy(i => seqs[i].Tokens.Length).ThenBy(i => i)];
        var batches = order.Chunk(_cfg.MicroBatch).ToList();
        foreach (int[] rows in batches)
        {
            var (policy, refModel, tokens, targets) = Pack(seqs, rows);
            var ce = new float[tokens.Length];
            policy.Step(tokens, targets, NoAux, gradients: false, tokenLoss: ce);
            Unpack(seqs, rows, policy.SeqLen, ce, cur);
            if (_cfg.Grpo.Beta != 0)
            {
                refModel.Step(tokens, targets, NoAux, gradients: false, tokenLoss: ce);
                Unpack(seqs, rows, policy.SeqLen, ce, reference);
            }
        }

        // ∂loss/∂log p for every sampled token, group by group, scaled to one token-level (or sequence-level) mean.
        var grad = new double[seqs.Count][];
        double loss = 0, kl = 0;
        int groups = advantages.Count, g = _cfg.GroupSize;
        for (int k = 0; k < groups; k++)
        {
            int first = k * g;
            int[] lengths = [.. Enumerable.Range(first, g).Select(i => seqs[i].Completion)];
            double[] c = [.. Enumerable.Range(first, g).SelectMany(i => cur[i])];
            double[] r = _cfg.Grpo.Beta != 0 ? [.. Enumerable.Range(first, g).SelectMany(i => reference[i])] : [];
            var dg = new double[c.Length];
            double scale = _cfg.Grpo.Normalization == GrpoNormalization.Token ? (double)c.Length / total : 1.0 / groups;
            // One update per batch: the sampling policy is the current one, so old = cur (ratio 1).
            loss += scale * Grpo.Loss(_cfg.Grpo, lengths, c, c, r, advantages[k], dg);
            for (int t = 0; t < dg.Length; t++) dg[t] *= scale;
            if (_cfg.Grpo.Beta != 0)
                for (int t = 0; t < c.Length; t++) kl += Math.Exp(r[t] - c[t]) - (r[t] - c[t]) - 1;
            for (int i = 0, at = 0; i < g; at += lengths[i], i++) grad[first + i] = dg[at..(at + lengths[i])];
        }

        var weights = new LossWeights { Mtp = 0, Balance = 0 };
        foreach (int[] rows in batches)
        {
            var (policy, _, tokens, targets) = Pack(seqs, rows);
            int t = policy.SeqLen;
            var w = new float[tokens.Length];
            for (int r = 0; r < rows.Length; r++)
            {
                Sequence s = seqs[rows[r]];
                for (int j = 0; j < s.Completion; j++) w[r * t + s.PromptLength - 1 + j] = (float)-grad[rows[r]][j]; // CE = −log p
            }
            policy.Step(tokens, targets, weights, gradients: true, tokenWeights: w);
            foreach (var (layer, loads) in policy.ExpertLoads)
            {
                if (!_loads.TryGetValue(layer, out int[]? sum)) _loads[layer] = sum = new int[loads.Length];
                for (int e = 0; e < loads.Length; e++) sum[e] += loads[e];
            }
        }
        return (loss, total == 0 ? 0 : kl / total);
    }

    private static readonly LossWeights NoAux = new() { Mtp = 0, Balance = 0 };

    /// <summary>A micro-batch: rows = completions (prompt + sampled tokens), targets only on sampled tokens.</summary>
    private (TrainingModel Policy, TrainingModel Reference, int[] Tokens, int[] Targets) Pack(List<Sequence> seqs, int[] rows)
    {
        int longest = rows.Max(i => seqs[i].Tokens.Length);
        int t = Math.Min(_ps.Config.MaxPositionEmbeddings, (longest + 63) / 64 * 64);
        if (!_models.TryGetValue(t, out var pair))
            _models[t] = pair = (new TrainingModel(_ps, _cfg.MicroBatch, t), new TrainingModel(_ref, _cfg.MicroBatch, t));
        var tokens = new int[_cfg.MicroBatch * t];
        var targets = new int[tokens.Length];
        Array.Fill(targets, -1);
        for (int r = 0; r < rows.Length; r++)
        {
            Sequence s = seqs[rows[r]];
            s.Tokens.CopyTo(tokens, r * t);
            for (int j = s.PromptLength - 1; j < s.Tokens.Length - 1; j++) targets[r * t + j] = s.Tokens[j + 1];
        }
        return (pair.Policy, pair.Reference, tokens, targets);
    }

    private static void Unpack(List<Sequence> seqs, int[] rows, int t, float[] ce, double[][] into)
    {
        for (int r = 0; r < rows.Length; r++)
        {
            Sequence s = seqs[rows[r]];
            var lp = new double[s.Completion];
            for (int j = 0; j < lp.Length; j++) lp[j] = -ce[r * t + s.PromptLength - 1 + j];
            into[rows[r]] = lp;
        }
    }

    private static ulong Mix(ulong a, ulong b)
    {
        ulong h = a * 0x9E3779B97F4A7C15UL ^ (b + 0x632BE59BD9B4E019UL) * 0xBF58476D1CE4E5B9UL;
        h ^= h >> 31; h *= 0x94D049BB133111EBUL; h ^= h >> 29;
        return h;
    }

    public string SaveCheckpoint()
    {
        var state = new TrainerState(Step, 0, 0, 0, _configJson);
        string dir = Checkpoint.Save(CheckpointDir, _ps, _m, _v, state, _tokenizerDir, keep: 2);
        string csv = GrpoMetrics.Header + "\n" + string.Concat(_history.Select(h => h.ToCsv() + "\n"));
        AtomicFile.WriteText(Path.Combine(dir, "grpo.csv"), csv);
        AtomicFile.WriteText(Path.Combine(Out, "grpo.csv"), csv);
        return dir;
    }
}
