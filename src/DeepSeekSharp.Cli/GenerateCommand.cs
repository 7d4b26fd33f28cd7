using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss generate --model DIR --prompt TEXT [...] [--raw]</c>: streams the reply to stdout (reasoning
/// between &lt;think&gt; and &lt;/think&gt;), then a one-line usage summary to stderr.</summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        Option<string> model = CliApp.ModelOptionWithDefault();
        var prompt = new Option<string>("--prompt") { Description = "the prompt (a user message unless --raw)", Required = true };
        var raw = new Option<bool>("--raw") { Description = "send the prompt as is, without the chat template" };
        var suffix = new Option<string?>("--suffix") { Description = "fill in the middle: the model writes what goes between --prompt and this text (FIM tokens)" };
        var gen = new GenerationCliOptions();
        var loading = new ModelLoading();
        var cmd = new Command("generate", "Generate a reply to a prompt, streamed to stdout") { model, prompt, raw, suffix };
        gen.AddTo(cmd);
        loading.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            GenerationOptions options = gen.Read(r);
            string path = r.GetValue(model)!;
            Tokenizer tokenizer = Tokenizer.Load(path); // before the (slow) weights, so a missing tokenizer fails fast
            options.Validate(tokenizer.VocabSize);      // and so do bad options
            using Generator g = new(loading.Load(r, path, stderr), tokenizer, r.GetValue(gen.Context));
            GenerationCliOptions.WarnIfNoDrafts(options, g, stderr);
            using PrefixCache? prefixes = gen.AttachCache(r, g, stderr);
            string text = r.GetValue(prompt)!;
            IAsyncEnumerable<GenerationUpdate> stream = r.GetValue(suffix) is { } after
                ? g.GenerateAsync(g.FimPrompt(text, after), options, ct)
                : r.GetValue(raw)
                ? g.CompleteAsync(text, options, ct)
                : g.ChatAsync(JsonSerializer.SerializeToElement(new[] { new { role = "user", content = text } }), options, ct, gen.ReadPrompt(r));
            GenerationUsage? usage = await Print(stream, stdout);
            stdout.Flush();
            if (usage is not null) stderr.WriteLine(usage);
            return 0;
        });
        return cmd;
    }

    /// <summary>Writes deltas as they come; reasoning is wrapped in &lt;think&gt; … &lt;/think&gt;.</summary>
    internal static async Task<GenerationUsage?> Print(IAsyncEnumerable<GenerationUpdate> stream, TextWriter output)
    {
        bool inThink = false;
        GenerationUsage? usage = null;
        await foreach (GenerationUpdate u in stream)
        {
            if (u.Usage is not null) { usage = u.Usage; continue; }
            if (u.Part == ReplyPart.Reasoning && !inThink) { output.Write("<think>\n"); inThink = true; }
            if (u.Part == ReplyPart.Answer && inThink) { output.Write("\n</think>\n\n"); inThink = false; }
            output.Write(u.Text);
            output.Flush();
        }
        if (inThink) output.Write("\n</think>");
        output.WriteLine();
        return usage;
    }
}
