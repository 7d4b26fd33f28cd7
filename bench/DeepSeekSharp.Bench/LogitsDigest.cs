using System.Security.Cryptography;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Bench;

/// <summary><c>digest MODEL[:FORMAT[:mmap]] ...</c>: a SHA-256 of the logits of 30 fixed tokens per model, load format
/// and attention schedule (prefill in each mode, prefill then decode, token by token, MTP), one line each. Run it on
/// two builds (e.g. before and after a refactor, and under DOTNET_EnableAVX512=0 / DOTNET_EnableAVX2=0 /
/// DOTNET_EnableAVXVNNI=0) and diff the outputs: equal lines mean bit-identical logits.</summary>
internal static class LogitsDigest
{
    public static void Run(IEnumerable<string> specs)
    {
        foreach (string spec in specs)
        {
            string[] parts = spec.Split(':');
            WeightFormat? format = parts.Length > 1 && parts[1] != "" ? BenchArgs.Format(parts[1]) : null;
            bool mmap = parts.Length > 2 && parts[2] == "mmap";
            using DeepSeekModel model = DeepSeekModel.Load(parts[0], new LoadOptions { Quantize = format, MemoryMap = mmap });
            int vocab = model.Config.VocabSize;
            int[] ids = [.. Enumerable.Range(0, 30).Select(i => (int)((i * 7919L + 13) % Math.Min(vocab, 1000)))];
            string tag = $"{Path.GetFileName(Path.TrimEndingDirectorySeparator(parts[0]))} {format?.ToString() ?? "stored"}{(mmap ? " mmap" : "")}";
            foreach (var (name, mode, prefill, mtp) in new (string, AttentionMode, int, bool)[]
            {
                ("auto", AttentionMode.Auto, ids.Length, true), ("expanded", AttentionMode.Expanded, ids.Length, false),
                ("absorbed", AttentionMode.Absorbed, ids.Length, false), ("prefill20+decode", AttentionMode.Auto, 20, true),
                ("expanded-prefill5+decode", AttentionMode.Expanded, 5, false), ("absorbed-stepwise", AttentionMode.Absorbed, 1, false),
                ("stepwise", AttentionMode.Auto, 1, false),
            })
            {
                using InferenceSession s = model.CreateSession(64);
                s.Attention = mode;
                var logits = new List<float>(s.Forward(ids.AsSpan(0, prefill)));
                var hidden = new List<float>(s.LastHidden.ToArray());
                for (int p = prefill; p < ids.Length; p++)
                {
                    logits.AddRange(s.Forward(ids.AsSpan(p, 1)));
                    hidden.AddRange(s.LastHidden.ToArray());
                }
                if (mtp && model.MtpLayers > 0)
                {
                    var m = new float[(ids.Length - 1) * vocab];
                    s.ForwardMtp(ids.AsSpan(1), hidden.ToArray().AsSpan(0, (ids.Length - 1) * model.Config.Dim), m);
                    logits.AddRange(m);
                }
                byte[] hash = SHA256.HashData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(logits.ToArray().AsSpan()));
                Console.WriteLine($"{tag} {name} {Convert.ToHexString(hash)[..16]}");
            }
        }
    }
}
