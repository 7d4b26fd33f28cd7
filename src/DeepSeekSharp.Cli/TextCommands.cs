using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss tokenize</c> and <c>dss template</c>: JSON lines in on stdin, JSON lines out.</summary>
internal static class TextCommands
{
    internal static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static Option<string> TokenizerOption() => new("--tokenizer")
    {
        Description = "folder holding tokenizer.json and tokenizer_config.json",
        Required = true,
    };

    /// <summary>Reads JSON lines; a bad line is reported on stderr with its number and the rest still run.</summary>
    private static int EachLine(TextReader stdin, TextWriter stdout, TextWriter stderr, Func<JsonElement, object> handle)
    {
        int lineNo = 0, failures = 0;
        for (string? line = stdin.ReadLine(); line is not null; line = stdin.ReadLine())
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using JsonDocument doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new FormatException("expected a JSON object");
                stdout.WriteLine(JsonSerializer.Serialize(handle(doc.RootElement), Json));
            }
            catch (Exception e) when (e is JsonException or FormatException or TemplateException or InvalidOperationException or KeyNotFoundException or NotSupportedException)
            {
                failures++;
                stdout.Flush();
                stderr.WriteLine($"error: line {lineNo}: {CliApp.OneLine(e)}");
            }
        }
        return failures == 0 ? 0 : 1;
    }

    public static Command Tokenize(TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        Option<string> dir = TokenizerOption();
        var addBos = new Option<bool>("--add-bos") { Description = "prepend the BOS token" };
        var cmd = new Command("tokenize", "Read {\"text\": ...} lines on stdin, write {\"ids\": [...]} lines") { dir, addBos };
        cmd.SetAction(r =>
        {
            Tokenizer tok = Tokenizer.Load(r.GetValue(dir)!);
            bool bos = r.GetValue(addBos);
            return EachLine(stdin, stdout, stderr, o =>
            {
                if (!o.TryGetProperty("text", out JsonElement t) || t.ValueKind != JsonValueKind.String)
                    throw new FormatException("'text' must be a string");
                return new { ids = tok.Encode(t.GetString()!, addBos: bos) };
            });
        });
        return cmd;
    }

    public static Command Template(TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        Option<string> dir = TokenizerOption();
        var cmd = new Command("template", "Read {\"messages\": [...], \"add_generation_prompt\": bool} lines, write {\"rendered\": ...} lines using the folder's chat template") { dir };
        cmd.SetAction(r =>
        {
            string folder = r.GetValue(dir)!;
            TokenizerConfig config = TokenizerConfig.Load(folder);
            ChatTemplate template = ChatTemplate.Parse(config.ChatTemplate
                ?? throw new InvalidDataException($"{folder}: tokenizer_config.json has no chat_template"));
            return EachLine(stdin, stdout, stderr, o =>
            {
                if (!o.TryGetProperty("messages", out JsonElement messages) || messages.ValueKind != JsonValueKind.Array)
                    throw new FormatException("'messages' must be an array");
                bool gen = o.TryGetProperty("add_generation_prompt", out JsonElement g) && g.ValueKind == JsonValueKind.True;
                return new { rendered = template.Render(messages, gen, config.BosToken, config.EosToken) };
            });
        });
        return cmd;
    }
}
