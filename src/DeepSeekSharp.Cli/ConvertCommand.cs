using System.CommandLine;
using DeepSeekSharp.Formats.Gguf;
using DeepSeekSharp.Linear;
using Spectre.Console;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss convert --model HF_DIR --out FILE.gguf --type f32|f16|bf16|q8_0|q4_0|q2_k|q3_k_s|q3_k_m|q3_k_l|q4_k_s|q4_k_m|q5_k_s|q5_k_m|q6_k</c>:
/// a deepseek2 GGUF that llama.cpp and this engine both run.</summary>
internal static class ConvertCommand
{
    public static Command Create(TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder, or a GGUF file to re-quantise", Required = true };
        var output = new Option<string>("--out") { Description = "GGUF file to write", Required = true };
        var type = new Option<string>("--type")
        {
            Description = "file type as llama-quantize names it, in either case (q3_k, q4_k and q5_k are the _m mixes, as in llama-quantize; norms and routers stay f32)",
            DefaultValueFactory = _ => "q8_0",
        };
        type.CompletionSources.Add(GgufFileType.Names);
        type.Validators.Add(result =>
        {
            string? name = result.GetValueOrDefault<string>();
            if (name is not null && !GgufFileType.Names.Contains(name, StringComparer.OrdinalIgnoreCase))
                result.AddError($"--type '{name}' is not a GGUF file type; expected one of: {string.Join(", ", GgufFileType.Names)}");
        });
        var cmd = new Command("convert", "Convert a Hugging Face checkpoint to GGUF (llama.cpp's deepseek2 layout)") { model, output, type };
        cmd.SetAction(r =>
        {
            string src = r.GetValue(model)!, dst = r.GetValue(output)!;
            GgufFileType t = GgufFileType.Parse(r.GetValue(type)!);
            // SIGINT/SIGTERM stop the conversion between row batches; the unfinished OUT.tmp is deleted.
            using ShutdownSignals signals = ShutdownSignals.Listen();
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stderr) });
            try
            {
                console.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        ProgressTask task = ctx.AddTask($"converting to {Path.GetFileName(dst)}");
                        GgufConverter.Convert(src, dst, t, new TaskProgress(task), signals.Token);
                        task.Value = task.MaxValue;
                    });
            }
            catch (OperationCanceledException) when (signals.Token.IsCancellationRequested)
            {
                stderr.WriteLine($"interrupted by {signals.Signal}: nothing written (the partial {Path.GetFileName(dst)}.tmp was removed)");
                return 130;
            }
            stderr.WriteLine($"wrote {dst}: {new FileInfo(dst).Length:N0} bytes ({t})");
            return 0;
        });
        return cmd;
    }
}
