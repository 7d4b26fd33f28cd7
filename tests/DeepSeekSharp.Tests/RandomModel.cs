using DeepSeekSharp.Linear;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests;

/// <summary>A random-weight v3-tiny checkpoint with the real DeepSeek-V3 tokenizer (vocabulary 129280), written once
/// per test run by the project's own <see cref="RandomCheckpoint"/> and removed at exit with the run's <see cref="TestScratch.Root"/>.</summary>
public static class RandomModel
{
    private static readonly Lazy<string> Dir = new(() =>
    {
        string dir = Path.Combine(TestScratch.Root, "dss-random-v3-tiny-" + Guid.NewGuid().ToString("N"));
        RandomCheckpoint.Create(RandomCheckpoint.Preset("v3-tiny"), dir, WeightFormat.BF16, seed: 11,
            tokenizerDir: Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3"));
        return dir;
    });

    public static string V3Tiny => Dir.Value;

    private static readonly Lazy<string> R1Shaped = new(() =>
    {
        string r1 = Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny");
        string dir = Path.Combine(TestScratch.Root, "dss-random-r1-shape-" + Guid.NewGuid().ToString("N"));
        RandomCheckpoint.Create(DeepSeekSharp.Formats.HfConfig.Load(r1), dir, WeightFormat.F32, seed: 5, tokenizerDir: r1);
        return dir;
    });

    /// <summary>Random weights in the shipped r1-tiny model's shape, with its small tokenizer (512 ids): fast enough
    /// for thousands of generations in a test.</summary>
    public static string R1TinyShape => R1Shaped.Value;

    private static readonly Dictionary<ulong, string> DenseDirs = new();

    /// <summary>An all-dense random model (no routing decision a rounding error could flip) whose rows fit 256-blocks,
    /// so quantised formats can be compared with tight bounds; one per seed per test run, F32.</summary>
    public static string Dense(ulong seed)
    {
        lock (DenseDirs)
        {
            if (DenseDirs.TryGetValue(seed, out string? dir)) return dir;
            dir = Path.Combine(TestScratch.Root, $"dss-dense-{seed}-" + Guid.NewGuid().ToString("N"));
            ModelConfig c = RandomCheckpoint.Preset("v2-lite-tiny") with
            {
                VocabSize = 1000, Dim = 256, InterDim = 512, NLayers = 2, NDenseLayers = 2, NHeads = 4,
                KvLoraRank = 256, QkNopeHeadDim = 64, QkRopeHeadDim = 32, VHeadDim = 64,
            };
            RandomCheckpoint.Create(c, dir, WeightFormat.F32, seed: seed);
            return DenseDirs[seed] = dir;
        }
    }
}
