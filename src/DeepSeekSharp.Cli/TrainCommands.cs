using System.CommandLine;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Model;
using DeepSeekSharp.Text;
using DeepSeekSharp.Training;
using DeepSeekSharp.Training.Data;
using DeepSeekSharp.Training.Tasks;
using Spectre.Console;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss prepare-data</c> (text / JSONL → token shard) and <c>dss train --config train.json</c>.</summary>
internal static class TrainCommands
{
    public static Command PrepareData(TextWriter stdout)
    {
        var inputs = new Argument<string[]>("inputs") { Description = ".txt files (documents separated by blank lines) or .jsonl files ({\"text\"}, {\"prompt\", \"completion\"} or {\"messages\"} per line)", Arity = ArgumentArity.OneOrMore };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "folder with tokenizer.json and tokenizer_config.json (default: the bundled DeepSeek-V3 tokenizer)" };
        var output = new Option<string>("--out") { Description = "shard file to write (.tokens)", Required = true };
        var cmd = new Command("prepare-data", "Tokenize text or chat JSONL into a token shard for dss train (chat: loss on assistant turns only)") { inputs, tokenizer, output };
        cmd.SetAction(r =>
        {
            var prep = new DataPreparation(Tokenizer.Load(r.GetValue(tokenizer) ?? CliApp.BundledTokenizer()));
            foreach (string path in r.GetValue(inputs)!) prep.AddFile(path);
            string outPath = r.GetValue(output)!;
            prep.Write(outPath);
            stdout.WriteLine($"wrote {outPath}: {prep.Documents:N0} documents, {prep.TokenCount:N0} tokens ({prep.TargetCount:N0} loss targets)");
            return 0;
        });
        return cmd;
    }

    public static Command Train(TextWriter stdout, TextWriter stderr)
    {
        var config = new Option<string?>("--config") { Description = "training config (JSON; see docs/training.md)" };
        var recipe = new Option<string?>("--recipe") { Description = "run a whole recipe instead: r1-tiny (data, tokenizer, cold start, GRPO, evaluation, export)" };
        var seed = new Option<ulong>("--seed") { Description = "with --recipe: the seed of everything", DefaultValueFactory = _ => 1 };
        var outDir = new Option<string?>("--out") { Description = "with --recipe: the output folder (default: the recipe's name)" };
        var threads = new Option<int?>("--threads") { Description = "worker threads (overrides the config; results do not depend on it)" };
        var steps = new Option<int?>("--stop-after") { Description = "stop after this step and checkpoint it (the schedule still spans the config's steps; 0: write the initial weights); run again to continue" };
        var cmd = new Command("train", "Train a DeepSeek-architecture model on token shards; resumes from the newest checkpoint in its output folder") { config, threads, steps, recipe, seed, outDir };
        cmd.SetAction(r =>
        {
            if ((r.GetValue(config) is null) == (r.GetValue(recipe) is null)) throw new ArgumentException("give exactly one of --config FILE and --recipe NAME");
            if (r.GetValue(recipe) is { } name)
                return RunRecipe(name, r.GetValue(seed), r.GetValue(outDir) ?? name, r.GetValue(threads) ?? Environment.ProcessorCount, stdout, stderr);
            TrainConfig cfg = TrainConfig.Load(r.GetValue(config)!);
            int n = r.GetValue(threads) ?? (cfg.Threads > 0 ? cfg.Threads : Environment.ProcessorCount);
            using var pool = new WorkerPool(n);
            using IDisposable _ = WorkerPool.Use(pool);
            var trainer = new Trainer(cfg, CliApp.BundledTokenizer());
            ModelConfig c = trainer.Parameters.Config;
            stderr.WriteLine($"model: {c.ModelType}, hidden {c.Dim}, {c.NLayers} layers + {c.NMtpLayers} MTP, {c.NRoutedExperts} experts, vocab {c.VocabSize}: " +
                             $"{trainer.Parameters.Count:N0} trainable parameters");
            stderr.WriteLine($"data: {trainer.Loader.TrainWindows:N0} training windows of {cfg.SeqLen} + 1 tokens, {trainer.Loader.ValidationWindows:N0} held out; " +
                             $"batch {cfg.BatchSize} × {cfg.GradAccum} accumulated; {n} threads");
            stderr.WriteLine($"activation memory per micro-batch: {trainer.Model.ActivationBytes / (1024.0 * 1024):F1} MiB; " +
                             $"parameters + gradients + moments: {trainer.Parameters.Count * 16 / (1024.0 * 1024):F1} MiB");
            if (trainer.ResumedFrom is not null) stderr.WriteLine($"resumed from {trainer.ResumedFrom} at step {trainer.Step}");
            int stopAt = Math.Min(r.GetValue(steps) ?? cfg.Steps, cfg.Steps);
            using var cancel = new CancellationTokenSource();
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
            string plots = Path.Combine(trainer.Out, "plots");
            string Line(StepMetrics m) =>
                $"step {m.Step}/{cfg.Steps} loss {m.Loss:F3}{(m.ValidationLoss is { } v ? $" val {v:F3}" : "")} {m.TokensPerSecond:F0} tok/s";
            void Plot(string _) => TrainingPlots.Write(trainer.History, plots);
            // (--stop-after 0 runs nothing and writes the initial weights as step 0 below.)
            if (stopAt > trainer.Step && !console.Profile.Capabilities.Interactive)
            {
                // Logs and pipes get one line per log_interval steps (with the time left) instead of a redrawn bar.
                var clock = System.Diagnostics.Stopwatch.StartNew();
                int first = trainer.Step;
                trainer.Run(m =>
                {
                    if (m.Step % cfg.LogInterval == 0 || m.ValidationLoss is not null || m.Step == stopAt)
                    {
                        double left = clock.Elapsed.TotalSeconds / (m.Step - first) * (stopAt - m.Step);
                        stderr.WriteLine($"{Line(m)}, {TimeSpan.FromSeconds(Math.Round(left)):c} left");
                    }
                    if (m.Step >= stopAt) cancel.Cancel();
                }, Plot, cancel.Token);
            }
            else if (stopAt > trainer.Step)
                console.Progress().AutoClear(false).HideCompleted(false)
                    .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        ProgressTask task = ctx.AddTask("training", maxValue: cfg.Steps);
                        task.Value = trainer.Step;
                        trainer.Run(m =>
                        {
                            task.Value = m.Step;
                            task.Description = Line(m);
                            if (m.Step >= stopAt) cancel.Cancel();
                        }, Plot, cancel.Token);
                    });
            if (Checkpoint.Latest(trainer.CheckpointDir)?.EndsWith($"step-{trainer.Step:D6}", StringComparison.Ordinal) != true)
                trainer.SaveCheckpoint(); // stopped early between checkpoints: keep the work
            TrainingPlots.Write(trainer.History, plots); // (so running a finished config again redraws its plots)
            stdout.WriteLine($"step {trainer.Step}: checkpoint {Checkpoint.Latest(trainer.CheckpointDir)}; metrics {Path.Combine(trainer.Out, "metrics.csv")}; plots {plots}");
            return 0;
        });
        return cmd;
    }

    /// <summary><c>dss train --recipe r1-tiny</c>: every stage with one progress line per step (SFT every 20), plots
    /// under OUT/plots, the model in OUT/model.</summary>
    private static int RunRecipe(string name, ulong seed, string outDir, int threads, TextWriter stdout, TextWriter stderr)
    {
        R1RecipeOptions options = R1RecipeOptions.Named(name) with { Seed = seed };
        using var pool = new WorkerPool(threads);
        using IDisposable _ = WorkerPool.Use(pool);
        string assets = CliApp.BundledTokenizer(""), plots = Path.Combine(outDir, "plots");
        var recipe = new R1Recipe(options, outDir, assets, stderr.WriteLine);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int firstStep = 0;
        Trainer? sft = null;
        GrpoTrainer? grpo = null;
        string Left(int step, int from, int total) =>
            step > from ? TimeSpan.FromSeconds(Math.Round(clock.Elapsed.TotalSeconds / (step - from) * (total - step))).ToString("c") : "?";
        string? model = recipe.Run(
            stage1Started: t =>
            {
                sft = t; firstStep = t.Step; clock.Restart();
                stderr.WriteLine($"stage 1 (cold start): {t.Parameters.Count:N0} parameters, {options.SftSteps} steps{(t.ResumedFrom is not null ? $", resumed from {t.ResumedFrom}" : "")}");
            },
            sftStep: m =>
            {
                if (m.Step % 20 == 0 || m.ValidationLoss is not null || m.Step == options.SftSteps)
                    stderr.WriteLine($"stage 1 step {m.Step}/{options.SftSteps} loss {m.Loss:F3}{(m.ValidationLoss is { } v ? $" val {v:F3}" : "")} {m.TokensPerSecond:F0} tok/s, {Left(m.Step, firstStep, options.SftSteps)} left");
                if (m.ValidationLoss is not null) TrainingPlots.Write(sft!.History, Path.Combine(plots, "stage1"));
            },
            stage2Started: g =>
            {
                TrainingPlots.Write(sft?.History ?? [], Path.Combine(plots, "stage1"));
                grpo = g; firstStep = g.Step; clock.Restart();
                stderr.WriteLine($"stage 2 (GRPO): {options.Grpo.Steps} steps × {options.Grpo.PromptsPerStep} problems × {options.Grpo.GroupSize} samples{(g.ResumedFrom is not null ? $", resumed from {g.ResumedFrom}" : "")}");
            },
            grpoStep: m =>
            {
                stderr.WriteLine($"GRPO step {m.Step}/{options.Grpo.Steps} reward {m.Reward:F3} accuracy {m.Accuracy:P1} well-formed {m.FormatRate:P1} " +
                                 $"length {m.MeanLength:F0} KL {m.Kl:F4} groups {m.Groups}/{m.Groups + m.Skipped}{(m.HeldoutAccuracy is { } h ? $" held-out {h:P1} harder {m.HarderAccuracy:P1}" : "")} " +
                                 $"{m.Seconds:F1} s, {Left(m.Step, firstStep, options.Grpo.Steps)} left");
                TrainingPlots.WriteGrpo(grpo!.History, Path.Combine(plots, "stage2"));
            },
            evalProgress: (what, done, total) => { if (done % 50 == 0 || done == total) stderr.WriteLine($"eval {what}: {done}/{total}"); });
        if (model is null) { stdout.WriteLine($"stopped; run the same command again to continue"); return 1; }
        stdout.WriteLine($"model: {model} (model card: {Path.Combine(model, "README.md")}); evaluations: {Path.Combine(outDir, "eval")}; plots: {plots}");
        return 0;
    }
}
