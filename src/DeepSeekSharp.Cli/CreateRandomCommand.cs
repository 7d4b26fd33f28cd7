using DeepSeekSharp.Linear;
using System.CommandLine;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using Spectre.Console;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss create-random --preset v2-lite|v3|v3-tiny|v2-lite-tiny [--layers N] [--dtype bf16|f16|f32|fp8] [--no-mtp] --out DIR
/// [--seed S]</c>: a Hugging Face checkpoint with random weights and the real DeepSeek-V3 tokenizer.</summary>
internal static class CreateRandomCommand
{
    public static Command Create(TextWriter stderr)
    {
        var preset = new Option<string>("--preset") { Description = "model shape", Required = true };
        preset.AcceptOnlyFromAmong(RandomCheckpoint.Presets);
        var layers = new Option<int?>("--layers") { Description = "cut the stack to N layers" };
        var dtype = new Option<string>("--dtype") { Description = "storage dtype (fp8: E4M3 projections with 128x128 block scales, as DeepSeek ships V3)", DefaultValueFactory = _ => "bf16" };
        dtype.AcceptOnlyFromAmong("bf16", "f16", "f32", "fp8");
        var output = new Option<string>("--out") { Description = "folder to write", Required = true };
        var noMtp = new Option<bool>("--no-mtp") { Description = "leave out the multi-token-prediction module (as llama.cpp's converter does)" };
        var seed = new Option<ulong>("--seed") { Description = "weights RNG seed", DefaultValueFactory = _ => 1 };
        var cmd = new Command("create-random", "Write a random-weight checkpoint with a real DeepSeek shape and tokenizer") { preset, layers, dtype, output, seed, noMtp };
        cmd.SetAction(r =>
        {
            ModelConfig config = RandomCheckpoint.Preset(r.GetValue(preset)!, r.GetValue(layers));
            if (r.GetValue(noMtp)) config = config with { NMtpLayers = 0 };
            WeightFormat type = r.GetValue(dtype) switch { "f32" => WeightFormat.F32, "f16" => WeightFormat.F16, "fp8" => WeightFormat.FP8, _ => WeightFormat.BF16 };
            string dir = r.GetValue(output)!;
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
            console.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    ProgressTask task = ctx.AddTask($"writing {dir}");
                    RandomCheckpoint.Create(config, dir, type, r.GetValue(seed), CliApp.BundledTokenizer(), new TaskProgress(task));
                    task.Value = task.MaxValue;
                });
            ModelSummary s = ModelSummary.FromConfig(config);
            stderr.WriteLine($"wrote {dir}: {config.ModelType}, {config.NLayers} layers, {s.TotalParameters:N0} parameters ({s.ActiveParameters:N0} active per token)");
            return 0;
        });
        return cmd;
    }
}
