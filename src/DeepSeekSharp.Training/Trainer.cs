using System.Diagnostics;
using System.Globalization;
using System.Text;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Model;
using DeepSeekSharp.Training.Data;

namespace DeepSeekSharp.Training;

/// <summary>One optimizer step's numbers (a row of metrics.csv).</summary>
public sealed record StepMetrics(int Step, long Tokens, double Lr, double Loss, double MainCe, double MtpCe, double Balance, double GradNorm,
    double TokensPerSecond, double? ValidationLoss, IReadOnlyList<(int Layer, double MaxOverMean, double MinOverMean)> Load)
{
    public static string Header(IEnumerable<int> moeLayers) =>
        "step,tokens,lr,loss,main_ce,mtp_ce,balance,grad_norm,tokens_per_s,val_loss" +
        string.Concat(moeLayers.Select(l => $",load_max_{l},load_min_{l}"));

    public string ToCsv()
    {
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        sb.Append(ci, $"{Step},{Tokens},{Lr:R},{Loss:R},{MainCe:R},{MtpCe:R},{Balance:R},{GradNorm:R},{TokensPerSecond:F1},");
        if (ValidationLoss is { } v) sb.Append(v.ToString("R", ci));
        foreach (var (_, max, min) in Load) sb.Append(ci, $",{max:R},{min:R}");
        return sb.ToString();
    }

    public static StepMetrics FromCsv(string line)
    {
        string[] f = line.Split(',');
        double D(int i) => double.Parse(f[i], CultureInfo.InvariantCulture);
        var load = new List<(int, double, double)>();
        for (int i = 10; i + 1 < f.Length; i += 2) load.Add(((i - 10) / 2, D(i), D(i + 1)));
        return new StepMetrics(int.Parse(f[0], CultureInfo.InvariantCulture), long.Parse(f[1], CultureInfo.InvariantCulture), D(2), D(3), D(4), D(5), D(6), D(7), D(8),
            f[9].Length == 0 ? null : D(9), load);
    }
}

/// <summary>The training loop of <c>dss train</c>: batches from the loader, forward and backward with gradient
/// accumulation, clipping by global norm, AdamW with warm-up + cosine learning rate, the auxiliary-loss-free bias
/// update, validation at an interval, checkpoints (and metrics.csv) at an interval and at the end, resuming from the
/// newest checkpoint in the output folder. Everything it does is a function of the config and seed: the same config
/// gives the same weights bit for bit with any thread count, interrupted and resumed or not.</summary>
public sealed class Trainer
{
    private readonly TrainConfig _cfg;
    private readonly ParameterSet _ps;
    private readonly TrainingModel _model;
    private readonly BatchLoader _loader;
    private readonly AdamW _adam;
    private readonly LrSchedule _schedule;
    private readonly float[] _m, _v;
    private readonly int[] _tokens, _targets;
    private readonly Dictionary<int, int[]> _loads = [];
    private readonly List<StepMetrics> _history = [];
    private readonly string? _tokenizerDir;
    private long _tokensSeen;

    public Trainer(TrainConfig cfg, string? bundledTokenizer = null)
    {
        _cfg = cfg;
        ModelConfig c = cfg.ModelConfig();
        _ps = new ParameterSet(c);
        Out = cfg.Resolve(cfg.Out);
        CheckpointDir = Path.Combine(Out, "checkpoints");
        _tokenizerDir = cfg.Tokenizer is not null ? cfg.Resolve(cfg.Tokenizer)
            : cfg.InitFrom is not null && File.Exists(Path.Combine(cfg.Resolve(cfg.InitFrom), "tokenizer.json")) ? cfg.Resolve(cfg.InitFrom)
            : bundledTokenizer;
        var shards = cfg.Data.Select(d => TokenShard.Read(cfg.Resolve(d))).ToList();
        _loader = new BatchLoader(shards, c.VocabSize, cfg.BatchSize, cfg.SeqLen, cfg.ValidationFraction, cfg.Seed);
        _model = new TrainingModel(_ps, cfg.BatchSize, cfg.SeqLen);
        _adam = new AdamW { Beta1 = cfg.Beta1, Beta2 = cfg.Beta2, Eps = cfg.Eps, WeightDecay = cfg.WeightDecay };
        _schedule = new LrSchedule(cfg.Lr, cfg.MinLr, cfg.WarmupSteps, cfg.Steps);
        _m = new float[_ps.Count];
        _v = new float[_ps.Count];
        _tokens = new int[cfg.BatchSize * cfg.SeqLen];
        _targets = new int[_tokens.Length];
        foreach (var (layer, loads) in _model.ExpertLoads) _loads[layer] = new int[loads.Length];

        string? resume = Checkpoint.Latest(CheckpointDir);
        if (resume is not null)
        {
            TrainerState state = Checkpoint.Load(resume, _ps, _m, _v);
            if (state.ConfigJson != Fingerprint(cfg))
                throw new InvalidDataException($"{resume}: the run in {Out} was started with a different config; use another \"out\" folder or the same config");
            Step = state.Step;
            _tokensSeen = state.Tokens;
            _loader.Restore(state.Epoch, state.Position);
            string csv = Path.Combine(resume, "metrics.csv");
            if (File.Exists(csv)) _history.AddRange(File.ReadLines(csv).Skip(1).Select(StepMetrics.FromCsv));
            ResumedFrom = resume;
        }
        else if (cfg.InitFrom is not null) _ps.Load(cfg.Resolve(cfg.InitFrom));
        else _ps.Initialize(cfg.Seed);
    }

    public string Out { get; }
    public string CheckpointDir { get; }
    public int Step { get; private set; }
    public string? ResumedFrom { get; }
    public ParameterSet Parameters => _ps;
    public TrainingModel Model => _model;
    public BatchLoader Loader => _loader;
    public IReadOnlyList<StepMetrics> History => _history;
    public IEnumerable<int> MoeLayers => _loads.Keys.Order();

    /// <summary>The config fields that decide the weights (not the output folder, intervals or threads).</summary>
    private static string Fingerprint(TrainConfig c) =>
        (c with { Out = "", Threads = 0, LogInterval = 1, CheckpointInterval = 1, KeepCheckpoints = 1, Steps = 1 }).ToJson();

    /// <summary>Runs to <see cref="TrainConfig.Steps"/> (the LR schedule spans that many). <paramref name="stepDone"/> sees each
    /// step's metrics; <paramref name="checkpointSaved"/> each checkpoint folder.</summary>
    public void Run(Action<StepMetrics>? stepDone = null, Action<string>? checkpointSaved = null, CancellationToken cancel = default)
    {
        var clock = Stopwatch.StartNew();
        while (Step < _cfg.Steps && !cancel.IsCancellationRequested)
        {
            long t0 = clock.ElapsedTicks;
            StepMetrics m = TrainStep();
            double seconds = (double)(clock.ElapsedTicks - t0) / Stopwatch.Frequency;
            m = m with { TokensPerSecond = _cfg.BatchSize * _cfg.SeqLen * _cfg.GradAccum / seconds };
            if (Step % _cfg.EvalInterval == 0 || Step == _cfg.Steps) m = m with { ValidationLoss = Validate() };
            _history.Add(m);
            stepDone?.Invoke(m);
            if (Step % _cfg.CheckpointInterval == 0 || Step == _cfg.Steps)
            {
                string dir = SaveCheckpoint();
                checkpointSaved?.Invoke(dir);
            }
        }
    }

    /// <summary>One optimizer step over grad_accum micro-batches.</summary>
    public StepMetrics TrainStep()
    {
        Array.Clear(_ps.Grads);
        foreach (int[] l in _loads.Values) Array.Clear(l);
        var weights = new LossWeights { Mtp = _cfg.MtpLambdaAt(Step), Balance = _cfg.BalanceAlpha };
        double loss = 0, main = 0, mtp = 0, balance = 0, scale = 1.0 / _cfg.GradAccum;
        for (int micro = 0; micro < _cfg.GradAccum; micro++)
        {
            _loader.Next(_tokens, _targets);
            BatchLoss b = _model.Step(_tokens, _targets, weights, gradients: true, gradScale: scale);
            loss += b.Total * scale; main += b.MainCe * scale; mtp += b.MtpCe * scale; balance += b.Balance * scale;
            foreach (var (layer, loads) in _model.ExpertLoads)
                for (int e = 0; e < loads.Length; e++) _loads[layer][e] += loads[e];
            _tokensSeen += _tokens.Length;
        }
        double norm = _cfg.GradClip > 0 ? GradientClipping.Clip([_ps.Grads.AsMemory()], _cfg.GradClip) : GradientClipping.GlobalNorm([_ps.Grads.AsMemory()]);
        double lr = _schedule.At(Step);
        OptimizerJob.Run(this, lr);
        _ps.Changed();
        var load = new List<(int, double, double)>();
        foreach (var (layer, loads) in _loads.OrderBy(p => p.Key))
        {
            double mean = loads.Average();
            load.Add((layer, loads.Max() / mean, loads.Min() / mean));
            if (_cfg.BiasGamma > 0 && !_ps.RouterBias(layer).IsEmpty) BiasBalancing.Update(_ps.RouterBias(layer), loads, (float)_cfg.BiasGamma);
        }
        Step++;
        return new StepMetrics(Step, _tokensSeen, lr, loss, main, mtp, balance, norm, 0, null, load);
    }

    /// <summary>AdamW over the parameter tensors, one tensor per chunk (each tensor's update is independent).</summary>
    private sealed class OptimizerJob : PoolJob
    {
        private Trainer _t = null!;
        private double _lr;
        private static readonly OptimizerJob Instance = new();

        public static void Run(Trainer t, double lr)
        {
            (Instance._t, Instance._lr) = (t, lr);
            WorkerPool.Shared.Run(Instance, t._ps.Tensors.Count);
        }

        public override void Execute(int chunk)
        {
            Parameter p = _t._ps.Tensors[chunk];
            int o = (int)p.Offset;
            _t._adam.Step(_t._ps.Value(p), _t._ps.Grad(p), _t._m.AsSpan(o, p.Length), _t._v.AsSpan(o, p.Length), _t.Step + 1, _lr, p.Decay);
        }
    }

    /// <summary>Mean total loss over the validation batches (eval_batches of them, 0 = all), without gradients.</summary>
    public double? Validate()
    {
        int batches = _cfg.EvalBatches == 0 ? _loader.ValidationBatches : Math.Min(_cfg.EvalBatches, _loader.ValidationBatches);
        if (batches == 0) return null;
        var weights = new LossWeights { Mtp = 0, Balance = 0 };
        double sum = 0;
        for (int i = 0; i < batches; i++)
        {
            _loader.Validation(i, _tokens, _targets);
            sum += _model.Step(_tokens, _targets, weights, gradients: false).MainCe;
        }
        return sum / batches;
    }

    /// <summary>Writes a checkpoint of the current step and the metrics so far.</summary>
    public string SaveCheckpoint()
    {
        var state = new TrainerState(Step, _loader.Epoch, _loader.Position, _tokensSeen, Fingerprint(_cfg));
        string dir = Checkpoint.Save(CheckpointDir, _ps, _m, _v, state, _tokenizerDir, _cfg.KeepCheckpoints);
        string csv = MetricsCsv();
        AtomicFile.WriteText(Path.Combine(dir, "metrics.csv"), csv);
        AtomicFile.WriteText(Path.Combine(Out, "metrics.csv"), csv);
        return dir;
    }

    public string MetricsCsv() =>
        StepMetrics.Header(MoeLayers) + "\n" + string.Concat(_history.Select(h => h.ToCsv() + "\n"));
}
