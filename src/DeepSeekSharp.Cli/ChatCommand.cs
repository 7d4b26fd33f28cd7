using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Text;
using Spectre.Console;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss chat --model DIR</c>: an interactive conversation through the model's chat template. Reasoning
/// is shown dimmed, apart from the answer; <c>/reset</c> starts over, <c>/exit</c> (or end of input) leaves;
/// Ctrl+C stops the current answer without leaving.</summary>
internal static class ChatCommand
{
    public static Command Create(TextReader stdin, TextWriter stdout)
    {
        Option<string> model = CliApp.ModelOptionWithDefault();
        var system = new Option<string?>("--system") { Description = "a system prompt" };
        var gen = new GenerationCliOptions();
        var loading = new ModelLoading();
        var cmd = new Command("chat", "Chat with a model in the terminal") { model, system };
        gen.AddTo(cmd);
        loading.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
            {
                Out = new AnsiConsoleOutput(stdout),
                Ansi = ReferenceEquals(stdout, Console.Out) || stdout is StreamWriter ? AnsiSupport.Detect : AnsiSupport.No,
                ColorSystem = ColorSystemSupport.Detect,
            });
            string path = r.GetValue(model)!;
            Tokenizer tokenizer = Tokenizer.Load(path); // before the (slow) weights, so a missing tokenizer fails fast
            GenerationOptions options = gen.Read(r);
            options.Validate(tokenizer.VocabSize);      // and so do bad options
            using Generator g = new(loading.Load(r, path, Console.Error), tokenizer, r.GetValue(gen.Context));
            GenerationCliOptions.WarnIfNoDrafts(options, g, Console.Error);
            using PrefixCache? prefixes = gen.AttachCache(r, g, Console.Error);
            await Run(g, options, r.GetValue(system), stdin, console, ct, gen.ReadPrompt(r));
            return 0;
        });
        return cmd;
    }

    internal static async Task Run(Generator g, GenerationOptions options, string? systemPrompt, TextReader input, IAnsiConsole console, CancellationToken ct,
        ChatPromptOptions? prompt = null)
    {
        var history = new List<Dictionary<string, string>>();
        void Reset()
        {
            history.Clear();
            if (!string.IsNullOrEmpty(systemPrompt)) history.Add(new() { ["role"] = "system", ["content"] = systemPrompt });
        }
        Reset();
        console.MarkupLine($"[bold]dss chat[/] — {Markup.Escape(Path.GetFileName(Path.TrimEndingDirectorySeparator(g.Model.Path)))}, context {g.ContextLength}. " +
                           "[grey]/reset starts over, /exit leaves, Ctrl+C stops an answer.[/]");
        CancellationTokenSource? answering = null;
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (answering is { IsCancellationRequested: false } a) { e.Cancel = true; a.Cancel(); }
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                console.Markup("[bold green]> [/]");
                string? line = input.ReadLine();
                if (line is null) { console.WriteLine(); break; }
                line = line.Trim();
                if (line.Length == 0) continue;
                if (line == "/exit") break;
                if (line == "/reset")
                {
                    Reset();
                    g.Reset();
                    console.MarkupLine("[grey](conversation reset)[/]");
                    continue;
                }
                history.Add(new() { ["role"] = "user", ["content"] = line });
                using (answering = CancellationTokenSource.CreateLinkedTokenSource(ct))
                {
                    string answer = await Answer(g, history, options, prompt, console, answering.Token);
                    history.Add(new() { ["role"] = "assistant", ["content"] = answer });
                }
                answering = null;
            }
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static async Task<string> Answer(Generator g, List<Dictionary<string, string>> history, GenerationOptions options,
        ChatPromptOptions? prompt, IAnsiConsole console, CancellationToken ct)
    {
        var answer = new System.Text.StringBuilder();
        ReplyPart? shown = null;
        try
        {
            await foreach (GenerationUpdate u in g.ChatAsync(JsonSerializer.SerializeToElement(history), options, ct, prompt))
            {
                if (u.Usage is { } usage)
                {
                    console.WriteLine();
                    console.MarkupLine($"[grey]{Markup.Escape(usage.ToString())}[/]");
                    continue;
                }
                if (u.Part == ReplyPart.Reasoning)
                {
                    if (shown != ReplyPart.Reasoning) console.MarkupLine("[dim italic]thinking…[/]");
                    console.Markup($"[dim]{Markup.Escape(u.Text)}[/]");
                }
                else
                {
                    if (shown == ReplyPart.Reasoning) { console.WriteLine(); console.WriteLine(); }
                    console.Write(new Spectre.Console.Text(u.Text));
                    answer.Append(u.Text);
                }
                shown = u.Part;
            }
        }
        catch (OperationCanceledException)
        {
            console.WriteLine();
            console.MarkupLine("[yellow](stopped)[/]");
        }
        return answer.ToString();
    }
}
