using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests;

/// <summary>A random-weight v3-tiny checkpoint with the real DeepSeek-V3 tokenizer (vocabulary 129280), written once
/// per test run by the project's own <see cref="RandomCheckpoint"/> and removed at exit.</summary>
public static class RandomModel
{
    private static readonly Lazy<string> Dir = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "dss-random-v3-tiny-" + Guid.NewGuid().ToString("N"));
        RandomCheckpoint.Create(RandomCheckpoint.Preset("v3-tiny"), dir, DType.BF16, seed: 11,
            tokenizerDir: Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3"));
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, true); } catch (IOException) { } };
        return dir;
    });

    public static string V3Tiny => Dir.Value;
}
