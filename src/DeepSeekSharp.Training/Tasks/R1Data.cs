using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Text.Templates;
using DeepSeekSharp.Training.Tokenization;

namespace DeepSeekSharp.Training.Tasks;

/// <summary>The data of R1's cold start for the arithmetic task: a small tokenizer in R1's form (DeepSeek's special
/// tokens, <c>&lt;think&gt;</c> / <c>&lt;/think&gt;</c> whole, R1's chat template) and supervised examples whose prompt is
/// a user question rendered by that template (ending inside <c>&lt;think&gt;\n</c>) and whose completion is the worked
/// solution, the answer line and end-of-sentence.</summary>
public static class R1Data
{
    public const string Bos = "<｜begin▁of▁sentence｜>", Eos = "<｜end▁of▁sentence｜>";

    /// <summary>Trains the vocabulary on worked solutions and writes tokenizer.json and tokenizer_config.json into
    /// <paramref name="dir"/>.</summary>
    /// <param name="preTokenizer">DeepSeek-V3's <c>pre_tokenizer</c> object</param>
    /// <param name="chatTemplate">R1's chat template</param>
    public static void WriteTokenizer(string dir, IEnumerable<Problem> corpus, int vocabSize, JsonElement preTokenizer, string chatTemplate)
    {
        Directory.CreateDirectory(dir);
        JsonObject tokenizer = BpeTrainer.Train(corpus.Select(p => p.Question + "\n" + Arithmetic.Solution(p)), vocabSize, SingleDigits(preTokenizer));
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString());
        var config = new JsonObject
        {
            ["add_bos_token"] = true, ["add_eos_token"] = false, ["bos_token"] = Bos, ["eos_token"] = Eos,
            ["model_max_length"] = 4096, ["tokenizer_class"] = "LlamaTokenizerFast", ["chat_template"] = chatTemplate,
        };
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>DeepSeek-V3's pre-tokenizer with numbers split into single digits instead of groups of up to three
    /// (as LLaMA's and Qwen's tokenizers do), so that every digit a column of the working needs is a token of its own.</summary>
    public static JsonElement SingleDigits(JsonElement preTokenizer)
    {
        const string groups = @"\\p{N}{1,3}", single = @"\\p{N}"; // as escaped in the JSON text
        string text = preTokenizer.GetRawText();
        if (!text.Contains(groups, StringComparison.Ordinal))
            throw new InvalidDataException($"the pre-tokenizer has no {groups} split to replace");
        return JsonDocument.Parse(text.Replace(groups, single, StringComparison.Ordinal)).RootElement.Clone();
    }

    /// <summary>One supervised example: the templated prompt and the completion to learn.</summary>
    public static (string Prompt, string Completion) Example(Problem p, ChatTemplate template)
    {
        string prompt = template.Render(JsonSerializer.SerializeToElement(new[] { new { role = "user", content = p.Question } }), true, Bos, Eos);
        string solution = Arithmetic.Solution(p);
        if (prompt.EndsWith("<think>\n", StringComparison.Ordinal) && solution.StartsWith("<think>\n", StringComparison.Ordinal))
            solution = solution["<think>\n".Length..]; // R1's prompt already opened the block
        return (prompt, solution + Eos);
    }

    /// <summary>Writes examples as <c>{"prompt", "completion"}</c> JSONL for <c>dss prepare-data</c>.</summary>
    public static void WriteExamples(string path, IEnumerable<Problem> problems, ChatTemplate template)
    {
        AtomicFile.Write(path, s =>
        {
            using var w = new StreamWriter(s, leaveOpen: true);
            foreach (Problem p in problems)
            {
                var (prompt, completion) = Example(p, template);
                w.WriteLine(JsonSerializer.Serialize(new { prompt, completion }));
            }
        });
    }
}
