using DeepSeekSharp.Linear;
using System.CommandLine;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using Spectre.Console;

namespace DeepSeekSharp.Cli;

/// <summary>The weight-loading options shared by generate, chat, serve and bench, and loading with a progress bar.</summary>
internal sealed class ModelLoading
{
    public readonly Option<string?> Quantize = new("--quantize")
    {
        Description = $"convert weights at load: {string.Join(", ", WeightFormats.Names(WeightFormats.LoadTargets))} (default: as stored)",
    };
    public readonly Option<bool> Mmap = new("--mmap") { Description = "use weights that keep their stored format from the memory-mapped files in place" };
    public readonly Option<string> CacheType = new("--cache-type")
    {
        Description = "how the latent KV cache holds its values: f32, or bf16 (half the memory per position, each value rounded)",
        DefaultValueFactory = _ => "f32",
    };

    public ModelLoading()
    {
        Quantize.AcceptOnlyFromAmong(WeightFormats.Names(WeightFormats.LoadTargets));
        CacheType.AcceptOnlyFromAmong("f32", "bf16");
    }

    public void AddTo(Command c)
    {
        c.Options.Add(Quantize);
        c.Options.Add(Mmap);
        c.Options.Add(CacheType);
    }

    public static WeightFormat? Format(string? name) => name is null ? null : WeightFormats.Parse(name, WeightFormats.LoadTargets);

    public LatentCacheFormat CacheFormat(ParseResult r) => r.GetValue(CacheType) == "bf16" ? LatentCacheFormat.BF16 : LatentCacheFormat.F32;

    public DeepSeekModel Load(ParseResult r, string path, TextWriter progressTo) =>
        Load(path, Format(r.GetValue(Quantize)), r.GetValue(Mmap), progressTo, CacheFormat(r));

    /// <summary>Loads with a progress bar on <paramref name="progressTo"/> (plain when it is not a terminal).</summary>
    public static DeepSeekModel Load(string path, WeightFormat? format, bool mmap, TextWriter progressTo, LatentCacheFormat cache = LatentCacheFormat.F32)
    {
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(progressTo) });
        DeepSeekModel? model = null;
        console.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn())
            .Start(ctx =>
            {
                ProgressTask task = ctx.AddTask($"loading {Path.GetFileName(Path.TrimEndingDirectorySeparator(path))}{(format is { } f ? $" as {f}" : "")}");
                model = DeepSeekModel.Load(path, new LoadOptions { Quantize = format, MemoryMap = mmap, CacheFormat = cache, Progress = new TaskProgress(task) });
                task.Value = task.MaxValue;
            });
        return model!;
    }
}

/// <summary>Reports (done, total) to a progress bar on the reporting thread (Progress&lt;T&gt; would post to the
/// thread pool).</summary>
internal sealed class TaskProgress(ProgressTask task) : IProgress<(int Done, int Total)>, IProgress<(long Done, long Total)>
{
    public void Report((int Done, int Total) p) => Report(((long)p.Done, (long)p.Total));

    public void Report((long Done, long Total) p)
    {
        task.MaxValue = Math.Max(p.Total, 1);
        task.Value = p.Done;
    }
}
