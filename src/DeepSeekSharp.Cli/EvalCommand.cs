using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Text;
using DeepSeekSharp.Training.Tasks;
using Spectre.Console;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss eval --model DIR --task arithmetic --split heldout [--samples N] [--temperature T] [--seed S] [--json]</c>:
/// accuracy per difficulty, format rate and mean lengths of a model's replies to a task's problems.</summary>
internal static class EvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        Option<string> model = CliApp.ModelOption();
        var task = new Option<string>("--task") { Description = "task: arithmetic", DefaultValueFactory = _ => "arithmetic" };
        var split = new Option<string>("--split") { Description = "train, heldout, harder or phrasing (held-out problems in wordings training never uses)", DefaultValueFactory = _ => "heldout" };
        var samples = new Option<int>("--samples") { Description = "problems to ask", DefaultValueFactory = _ => 200 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0f };
        var seed = new Option<ulong>("--seed") { Description = "which problems (and the sampling seed)", DefaultValueFactory = _ => 1 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "reply length limit", DefaultValueFactory = _ => 512 };
        var json = new Option<bool>("--json") { Description = "one JSON object instead of a table" };
        var mtp = new Option<bool>("--mtp") { Description = "also measure how often the MTP module's draft equals the next greedy token (first 50 problems)" };
        var errors = new Option<int>("--show-errors") { Description = "print up to this many wrong replies with their questions" };
        var loading = new ModelLoading();
        var cmd = new Command("eval", "Measure a model on a task with exact answers: accuracy per difficulty, format rate, reply lengths")
            { model, task, split, samples, temperature, seed, maxTokens, json, errors, mtp, loading.CacheType };
        cmd.SetAction(async (r, ct) =>
        {
            if (r.GetValue(task) != "arithmetic") throw new ArgumentException($"unknown task '{r.GetValue(task)}'; tasks: arithmetic");
            string splitName = r.GetValue(split)!;
            if (!Enum.TryParse(splitName, ignoreCase: true, out Split which) || !Enum.IsDefined(which))
                throw new ArgumentException($"unknown split '{splitName}'; splits: train, heldout, harder, phrasing");
            int n = r.GetValue(samples);
            if (n < 1) throw new ArgumentException($"--samples ({n}) must be ≥ 1");
            string path = r.GetValue(model)!;
            Tokenizer tokenizer = Tokenizer.Load(path);
            TaskEvaluation.CheckReasoningTokens(tokenizer);
            using Model.DeepSeekModel loaded = Model.DeepSeekModel.Load(path, new Model.LoadOptions { CacheFormat = loading.CacheFormat(r) });
            using var g = new Generator(loaded, tokenizer);
            var options = new GenerationOptions
            {
                MaxTokens = r.GetValue(maxTokens),
                Sampling = new SamplingOptions { Temperature = r.GetValue(temperature), Seed = r.GetValue(seed) },
            };
            List<Problem> problems = Arithmetic.Generate(which, n, r.GetValue(seed));
            var results = new List<EvalResult>();
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
            await console.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    ProgressTask bar = ctx.AddTask($"{splitName}", maxValue: n);
                    foreach (Problem p in problems)
                    {
                        results.Add(await TaskEvaluation.SolveAsync(g, p, options, ct));
                        bar.Increment(1);
                        bar.Description = $"{splitName}: {results.Count(x => x.Correct)}/{results.Count} correct";
                    }
                });
            EvalSummary s = EvalSummary.Of(results);
            double? agreement = r.GetValue(mtp) ? MtpAgreement.Measure(loaded, tokenizer, problems.Take(50), r.GetValue(maxTokens)) : null;
            foreach (EvalResult wrong in results.Where(x => !x.Correct).Take(r.GetValue(errors)))
                stderr.WriteLine($"--- {wrong.Problem.Question} (answer {wrong.Problem.Answer})\n{wrong.Completion}");
            if (r.GetValue(json))
            {
                stdout.WriteLine(JsonSerializer.Serialize(new
                {
                    task = "arithmetic", split = splitName, samples = s.Count, temperature = r.GetValue(temperature), accuracy = s.Accuracy,
                    format_rate = s.FormatRate, mean_completion_tokens = s.MeanCompletionTokens, mean_reasoning_tokens = s.MeanReasoningTokens,
                    mtp_draft_agreement = agreement,
                    by_digits = s.ByDigits.ToDictionary(p => p.Key.ToString(System.Globalization.CultureInfo.InvariantCulture), p => new { count = p.Value.Count, accuracy = p.Value.Accuracy }),
                }));
                return 0;
            }
            stdout.WriteLine($"{splitName}: {s.Count} problems, accuracy {s.Accuracy:P1}, well-formed {s.FormatRate:P1}, " +
                             $"mean reply {s.MeanCompletionTokens:F1} tokens ({s.MeanReasoningTokens:F1} reasoning)");
            foreach (var (digits, (count, acc)) in s.ByDigits) stdout.WriteLine($"  {digits} digits: {count} problems, accuracy {acc:P1}");
            if (agreement is { } a) stdout.WriteLine($"  MTP draft = next greedy token: {a:P1}");
            return 0;
        });
        return cmd;
    }
}
