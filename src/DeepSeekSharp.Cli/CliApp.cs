using System.CommandLine;

using DeepSeekSharp;

namespace DeepSeekSharp.Cli;

/// <summary>The <c>dss</c> command line. Every command writes its result to <c>stdout</c> and problems to
/// <c>stderr</c> as one line naming what is wrong, with exit code 1.</summary>
public static class CliApp
{
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, Console.In, stdout, stderr);

    public static int Run(string[] args, TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("DeepSeekSharp: run DeepSeek-V2/V3/R1 models in pure C#")
        {
            InspectCommand.Create(stdout),
            LogitsCommand.Create(stdout),
            GenerateCommand.Create(stdout, stderr),
            ChatCommand.Create(stdin, stdout),
            TextCommands.Tokenize(stdin, stdout, stderr),
            TextCommands.Template(stdin, stdout, stderr),
            CreateRandomCommand.Create(stderr),
            ConvertCommand.Create(stderr),
            ServeCommand.Create(stdout),
            BenchCommand.Create(stdout, stderr),
            TrainCommands.PrepareData(stdout),
            TrainCommands.Train(stdout, stderr),
            EvalCommand.Create(stdout, stderr),
        };
        ParseResult parsed = root.Parse(args);
        try
        {
            // ProcessTerminationTimeout = null: Ctrl+C is ours (chat stops the current answer and stays).
            return parsed.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
        }
        catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException or ArgumentException
                                       or InvalidOperationException or UnauthorizedAccessException or FormatException
                                       or KeyNotFoundException or Text.Templates.TemplateException or System.Text.Json.JsonException)
        {
            stdout.Flush();
            stderr.WriteLine($"error: {OneLine(e)}");
            return 1;
        }
    }

    /// <summary>The message alone: no "(Parameter 'x')" or "Actual value was" lines.</summary>
    internal static string OneLine(Exception e)
    {
        string m = e.Message.Split('\n')[0].TrimEnd();
        int p = m.LastIndexOf(" (Parameter '", StringComparison.Ordinal);
        return p > 0 ? m[..p] : m;
    }

    internal static Option<string> ModelOption() => new("--model")
    {
        Description = "Hugging Face model folder (config.json + safetensors) or a .gguf file",
        Required = true,
    };

    /// <summary>The model shipped with dss (trained by <c>dss train --recipe r1-tiny</c>), used when <c>--model</c> is not given.</summary>
    internal static string BundledModel() => Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny");

    /// <summary><c>--model</c> for the commands that talk to a model: the bundled r1-tiny when not given.</summary>
    internal static Option<string> ModelOptionWithDefault() => new("--model")
    {
        Description = "Hugging Face model folder (config.json + safetensors) or a .gguf file (default: the bundled r1-tiny, a small reasoning model that does arithmetic)",
        DefaultValueFactory = _ => BundledModel(),
    };

    /// <summary>Where the tokenizer files shipped with dss live.</summary>
    internal static string BundledTokenizer(string name = "deepseek-v3") => Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", name);
}
