using System.Text.Json;
using DeepSeekSharp.Text.Templates;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Bench;

/// <summary>Writes the cold-start data of R1's recipe for the arithmetic task into OUT: <c>tokenizer/</c> (a BPE
/// vocabulary trained on worked solutions, R1's chat template) and <c>sft.jsonl</c> ({"prompt", "completion"} lines),
/// for <c>dss prepare-data</c> and <c>dss train</c>; <c>dss eval</c> then measures the result.</summary>
internal static class R1DataBench
{
    public static void Run(string repo, string outDir, int examples, int vocab)
    {
        string tokenizers = Path.Combine(repo, "assets", "tokenizers");
        using JsonDocument v3 = JsonDocument.Parse(File.ReadAllText(Path.Combine(tokenizers, "deepseek-v3", "tokenizer.json")));
        string template = File.ReadAllText(Path.Combine(tokenizers, "deepseek-r1", "chat_template.reconstructed.jinja")).Trim();
        List<Problem> train = Arithmetic.Generate(Split.Train, examples, seed: 1);
        R1Data.WriteTokenizer(Path.Combine(outDir, "tokenizer"), train.Take(5000), vocab, v3.RootElement.GetProperty("pre_tokenizer"), template);
        R1Data.WriteExamples(Path.Combine(outDir, "sft.jsonl"), train, ChatTemplate.Parse(template));
        Console.WriteLine($"wrote {outDir}/tokenizer ({vocab} ids) and {outDir}/sft.jsonl ({examples} examples)");
    }
}
