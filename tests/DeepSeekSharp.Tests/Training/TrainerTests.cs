using System.Diagnostics;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Training;
using DeepSeekSharp.Training.Data;

namespace DeepSeekSharp.Tests.Training;

/// <summary>The training loop end to end on a tiny V3-shaped model (MLA with q-LoRA, noaux_tc MoE, one MTP module):
/// loss falls, results do not depend on threads or on being interrupted and resumed (in-process and by SIGKILL of a
/// real dss process), and bad configs, shards and checkpoints give clear errors without half-written files.</summary>
[Collection(TrainingCollection.Name)]
public class TrainerTests
{
    internal const string TinyModel = """
        {"model_type": "deepseek_v3", "vocab_size": 97, "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
         "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2, "n_routed_experts": 8, "n_shared_experts": 1,
         "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
         "norm_topk_prob": true, "routed_scaling_factor": 2.5, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
         "qk_rope_head_dim": 8, "v_head_dim": 8, "max_position_embeddings": 64, "num_nextn_predict_layers": 1,
         "rope_theta": 10000, "bos_token_id": 0, "eos_token_id": 1}
        """;

    /// <summary>A shard of a learnable sequence: runs of counting mod 90 from random starts.</summary>
    internal static string Shard(TempDir dir, int tokens = 6000, ulong seed = 7)
    {
        var rng = new DeepSeekSharp.Tensors.Rng(seed);
        int[] ids = new int[tokens];
        for (int i = 0; i < tokens; i++) ids[i] = i % 20 == 0 ? 2 + (int)(rng.NextUInt64() % 90) : 2 + (ids[i - 1] - 2 + 1) % 90;
        string path = dir.File("data.tokens");
        TokenShard.Write(path, 97, ids, Enumerable.Repeat((byte)1, tokens).ToArray(), tokens / 20);
        return path;
    }

    internal static string Config(TempDir dir, string outName = "run", string extra = "", int steps = 8)
    {
        string shard = File.Exists(dir.File("data.tokens")) ? dir.File("data.tokens") : Shard(dir);
        string path = dir.File(outName + ".json");
        File.WriteAllText(path, $$"""
            { "model": {{TinyModel}}, "data": ["{{Path.GetFileName(shard)}}"], "out": "{{outName}}",
              "batch_size": 4, "seq_len": 24, "steps": {{steps}}, "lr": 0.01, "min_lr": 0.001, "warmup_steps": 2,
              "eval_interval": 4, "eval_batches": 2, "checkpoint_interval": 4, "seed": 3 {{extra}} }
            """);
        return path;
    }

    private static byte[] Weights(string run) =>
        File.ReadAllBytes(Path.Combine(Checkpoint.Latest(Path.Combine(run, "checkpoints"))!, "model.safetensors"));

    private static Trainer Train(string config, int threads, int? stopAfter = null)
    {
        using var pool = new WorkerPool(threads);
        using IDisposable _ = WorkerPool.Use(pool);
        var trainer = new Trainer(TrainConfig.Load(config));
        using var cancel = new CancellationTokenSource();
        trainer.Run(m => { if (m.Step == stopAfter) cancel.Cancel(); }, null, cancel.Token);
        if (stopAfter is not null) trainer.SaveCheckpoint();
        return trainer;
    }

    [Fact]
    public void TrainingLowersTheLoss_AndWritesALoadableCheckpoint()
    {
        using var dir = new TempDir();
        Trainer t = Train(Config(dir, steps: 30), threads: 2);
        Assert.True(t.History[^1].MainCe < t.History[0].MainCe - 1.0, $"loss {t.History[0].MainCe:F3} → {t.History[^1].MainCe:F3}");
        Assert.NotNull(t.History[^1].ValidationLoss);
        // The checkpoint is a Hugging Face folder the engine runs; its logits are the trainer's own forward.
        string ckpt = Checkpoint.Latest(t.CheckpointDir)!;
        using var model = DeepSeekSharp.Model.DeepSeekModel.Load(ckpt);
        using var session = model.CreateSession();
        int[] prompt = [5, 6, 7, 8, 9, 10];
        float[] logits = session.Forward(prompt);
        var tm = new TrainingModel(t.Parameters, 1, prompt.Length);
        Assert.Equal(1, model.MtpLayers);
        // The next-token prediction of counting is learnt: after 5..10 comes 11.
        int v = model.Config.VocabSize, best = 0;
        for (int i = 1; i < v; i++) if (logits[(prompt.Length - 1) * v + i] > logits[(prompt.Length - 1) * v + best]) best = i;
        Assert.Equal(11, best);
        // The engine's logits equal the training forward's: the trainer's loss at those positions is the engine's.
        int[] targets = [6, 7, 8, 9, 10, -1];
        double engineCe = 0;
        for (int i = 0; i < 5; i++) engineCe += DeepSeekSharp.Kernels.CrossEntropy.Forward(logits.AsSpan(i * v, v), targets[i]);
        BatchLoss trainCe = tm.Step(prompt, targets, new LossWeights { Mtp = 0, Balance = 0 }, gradients: false);
        Assert.Equal(engineCe / 5, trainCe.MainCe, 4);
    }

    [Fact]
    public void TheWeightsBeingTrained_RunInTheEngineWithoutACheckpoint()
    {
        using var dir = new TempDir();
        Trainer t = Train(Config(dir, steps: 6), threads: 2);
        using var fromDisk = DeepSeekSharp.Model.DeepSeekModel.Load(Checkpoint.Latest(t.CheckpointDir)!);
        using var inMemory = DeepSeekSharp.Model.DeepSeekModel.FromSource(t.Parameters.Config, new ParameterSource(t.Parameters));
        int[] prompt = [3, 14, 15, 92, 65, 35];
        using var a = fromDisk.CreateSession();
        using var b = inMemory.CreateSession();
        Assert.Equal(a.Forward(prompt), b.Forward(prompt));
        Assert.Equal(1, inMemory.MtpLayers);
        // The biases the bias rule moved are the ones the engine routes with.
        Assert.Equal(t.Parameters.RouterBias(1).ToArray(), ((DeepSeekSharp.Model.MoeWeights)inMemory.Weights.Blocks[1].Ffn).RouterBias);
        Assert.Contains(t.Parameters.RouterBias(1).ToArray(), x => x != 0);
    }

    [Fact]
    public void Rollouts_AreReproducible_AndGreedyOnesFollowTheModel()
    {
        using var dir = new TempDir();
        Trainer t = Train(Config(dir, steps: 4), threads: 2);
        using var model = DeepSeekSharp.Model.DeepSeekModel.FromSource(t.Parameters.Config, new ParameterSource(t.Parameters));
        int[] prompt = [5, 6, 7];
        // Greedy: every member of the group is the argmax path, which a full recompute of each prefix confirms.
        var greedy = DeepSeekSharp.Training.Tasks.Rollouts.Sample(model, prompt, 3, new DeepSeekSharp.Inference.Sampling.SamplingOptions { Temperature = 0 }, 8);
        Assert.All(greedy, r => Assert.Equal(greedy[0].Ids, r.Ids));
        var seq = new List<int>(prompt);
        foreach (int id in greedy[0].Ids)
        {
            using var s = model.CreateSession();
            float[] logits = s.Forward([.. seq]);
            int v = model.Config.VocabSize, best = 0;
            for (int i = 1; i < v; i++) if (logits[(seq.Count - 1) * v + i] > logits[(seq.Count - 1) * v + best]) best = i;
            Assert.Equal(best, id);
            seq.Add(id);
        }
        // Sampled at temperature 1: the same seed gives the same group, and its members differ.
        var options = new DeepSeekSharp.Inference.Sampling.SamplingOptions { Temperature = 1, Seed = 42 };
        var a = DeepSeekSharp.Training.Tasks.Rollouts.Sample(model, prompt, 4, options, 12);
        var b = DeepSeekSharp.Training.Tasks.Rollouts.Sample(model, prompt, 4, options, 12);
        Assert.Equal(a.Select(r => r.Ids), b.Select(r => r.Ids));
        Assert.True(a.Select(r => string.Join(",", r.Ids)).Distinct().Count() > 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => DeepSeekSharp.Training.Tasks.Rollouts.Sample(model, prompt, 2, options, 100));
    }

    [Fact]
    public void Weights_AreBitIdentical_WithOneAndTwoThreads()
    {
        using var dir = new TempDir();
        Train(Config(dir, "one"), threads: 1);
        Train(Config(dir, "two"), threads: 2);
        Assert.Equal(Weights(dir.File("one")), Weights(dir.File("two")));
    }

    [Fact]
    public void ResumingFromACheckpoint_EndsWithTheSameWeights()
    {
        using var dir = new TempDir();
        Train(Config(dir, "straight"), threads: 2);
        Train(Config(dir, "resumed"), threads: 2, stopAfter: 3); // a checkpoint between the intervals
        Trainer t = Train(Config(dir, "resumed"), threads: 2);
        Assert.Equal(3, int.Parse(t.ResumedFrom![^6..]));
        Assert.Equal(Weights(dir.File("straight")), Weights(dir.File("resumed")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Checkpoint.Latest(dir.File("straight/checkpoints"))!, Checkpoint.OptimizerFile)),
            File.ReadAllBytes(Path.Combine(Checkpoint.Latest(dir.File("resumed/checkpoints"))!, Checkpoint.OptimizerFile)));
    }

    [Fact]
    public void ARunKilledWithSigkill_ResumesToTheSameWeights()
    {
        using var dir = new TempDir();
        string dss = Path.Combine(AppContext.BaseDirectory, "dss.dll");
        string straight = Config(dir, "straight", steps: 80), killed = Config(dir, "killed", steps: 80);
        Assert.Equal(0, CliRunner.Run("train", "--config", straight).Code);

        var psi = new ProcessStartInfo("dotnet", [dss, "train", "--config", killed]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using (Process p = Process.Start(psi)!)
        {
            p.BeginErrorReadLine(); p.BeginOutputReadLine();
            // Kill once the first checkpoint exists and the run is past it (mid-way between checkpoints, or at worst
            // mid-save: either way the last complete checkpoint must do).
            var clock = Stopwatch.StartNew();
            while (Checkpoint.Latest(dir.File("killed/checkpoints")) is null && !p.HasExited && clock.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(5);
            Thread.Sleep(50);
            Assert.False(p.HasExited, "the run finished before it could be killed");
            p.Kill(); // SIGKILL on Unix
            p.WaitForExit();
        }
        string? left = Checkpoint.Latest(dir.File("killed/checkpoints"));
        Assert.NotNull(left);
        Assert.True(int.Parse(left[^6..]) < 80);
        var (code, _, err) = CliRunner.Run("train", "--config", killed);
        Assert.True(code == 0, err);
        Assert.Contains("resumed from", err);
        Assert.Equal(Weights(dir.File("straight")), Weights(dir.File("killed")));
    }

    [Fact]
    public void UnknownField_IsNamed()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<InvalidDataException>(() => TrainConfig.Load(Config(dir, extra: ", \"learning_rate\": 0.1")));
        Assert.Contains("learning_rate", e.Message);
        Assert.Contains("lr", e.Message); // the known fields are listed
    }

    [Theory]
    [InlineData("\"batch_size\": 0", "batch_size")]
    [InlineData("\"seq_len\": 65", "max_position_embeddings")]
    [InlineData("\"lr\": -1", "lr")]
    [InlineData("\"init_from\": \"x\"", "exactly one of")]
    public void ImpossibleSettings_AreNamed(string field, string named)
    {
        using var dir = new TempDir();
        string path = Config(dir, extra: ", " + field); // a repeated field: the last one counts
        var e = Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(path)));
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void ImpossibleModelShape_IsNamed()
    {
        using var dir = new TempDir();
        string path = Config(dir);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"n_group\": 2", "\"n_group\": 3"));
        var e = Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(path)));
        Assert.Contains("n_group", e.Message);
    }

    [Fact]
    public void EmptyAndCorruptShards_AreRejected()
    {
        using var dir = new TempDir();
        string path = Config(dir), shard = dir.File("data.tokens");
        byte[] good = File.ReadAllBytes(shard);
        File.WriteAllBytes(shard, good[..^7]);
        Assert.Contains("truncated", Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(path))).Message);
        File.WriteAllBytes(shard, [.. "NOTTOKEN"u8.ToArray(), .. good[8..]]);
        Assert.Contains("not a token shard", Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(path))).Message);
        byte[] bad = (byte[])good.Clone();
        BitConverter.GetBytes(500).CopyTo(bad, 32 + 4 * 10);
        File.WriteAllBytes(shard, bad);
        Assert.Contains("token 10 is 500", Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(path))).Message);
        TokenShard.Write(shard, 97, [], [], 0);
        Assert.Contains("no tokens", Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(path))).Message);
        TokenShard.Write(shard, 97, new int[30], new byte[30], 1);
        Assert.Contains("fewer than one batch", Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(path))).Message);
    }

    [Fact]
    public void ACheckpointOfAnotherShape_IsRejected()
    {
        using var dir = new TempDir();
        Train(Config(dir, "small"), threads: 2);
        string other = Config(dir, "wide");
        File.WriteAllText(other, File.ReadAllText(other).Replace("\"hidden_size\": 32", "\"hidden_size\": 48"));
        // Resuming a different shape from the same output folder, and starting from another shape's checkpoint.
        Directory.Move(dir.File("small"), dir.File("wide"));
        var e = Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(other)));
        Assert.Contains("another model shape", e.Message);
        // A checkpoint whose tensors do not match its own config.json.
        string init = Checkpoint.Latest(dir.File("wide/checkpoints"))!;
        File.WriteAllText(Path.Combine(init, "config.json"), File.ReadAllText(Path.Combine(init, "config.json")).Replace("\"hidden_size\": 32", "\"hidden_size\": 48"));
        string fresh = dir.File("fresh.json");
        File.WriteAllText(fresh, $$"""{ "init_from": "{{init}}", "data": ["data.tokens"], "out": "fresh", "seq_len": 24, "batch_size": 4 }""");
        e = Assert.Throws<InvalidDataException>(() => new Trainer(TrainConfig.Load(fresh)));
        Assert.Contains("has shape", e.Message);
    }

    [Fact]
    public void AFullDisk_LeavesThePreviousCheckpointAndNoPartialOne()
    {
        using var dir = new TempDir();
        Trainer t = Train(Config(dir), threads: 2);
        string before = Checkpoint.Latest(t.CheckpointDir)!;
        Func<string, long> real = Checkpoint.FreeBytes;
        try
        {
            Checkpoint.FreeBytes = _ => 1000;
            var e = Assert.Throws<IOException>(() => t.SaveCheckpoint());
            Assert.Contains("free", e.Message);
        }
        finally { Checkpoint.FreeBytes = real; }
        // A failure in the middle of writing (here: the final name is taken by a file) removes the partial folder.
        t.TrainStep();
        File.WriteAllText(Path.Combine(t.CheckpointDir, $"step-{t.Step:D6}"), "in the way");
        Assert.Throws<IOException>(() => t.SaveCheckpoint());
        Assert.Empty(Directory.GetDirectories(t.CheckpointDir, "*.tmp"));
        Assert.Equal(before, Checkpoint.Latest(t.CheckpointDir));
        Assert.True(File.Exists(Path.Combine(before, "model.safetensors")));
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TrainingCollection
{
    public const string Name = "Training (whole-machine runs)";
}
