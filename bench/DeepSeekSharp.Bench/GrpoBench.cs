using DeepSeekSharp.Training;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Bench;

/// <summary>GRPO from a cold-start model (the stage-1 checkpoint of <c>dss train --recipe r1-tiny</c>) with the
/// recipe's settings and another seed, printing each step's numbers and time: to size stage 2 and to measure how much
/// its gain varies with the seed.</summary>
internal static class GrpoBench
{
    public static void Run(string model, string outDir, int steps, ulong seed)
    {
        if (steps == 0) // timing only: two training steps and the held-out evaluations
        {
            using var pool = new DeepSeekSharp.Kernels.WorkerPool(2);
            using IDisposable scope = DeepSeekSharp.Kernels.WorkerPool.Use(pool);
            var t0 = new GrpoTrainer(new R1RecipeOptions().Grpo, model, outDir);
            for (int round = 0; round < 2; round++)
            {
                var sw0 = System.Diagnostics.Stopwatch.StartNew();
                t0.TrainStep();
                Console.WriteLine($"step in {sw0.Elapsed.TotalSeconds:F1} s, GC gen2 count {GC.CollectionCount(2)}, heap {GC.GetTotalMemory(false) >> 20} MB");
            }
            foreach (var split in new[] { Split.Heldout, Split.Harder })
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                double acc = t0.Evaluate(split, 8);
                Console.WriteLine($"{split}: {acc:P1} in {sw.Elapsed.TotalSeconds:F1} s, GC gen2 count {GC.CollectionCount(2)}");
            }
            return;
        }
        GrpoConfig cfg = new R1RecipeOptions().Grpo with { Steps = steps, Seed = seed };
        var trainer = new GrpoTrainer(cfg, model, outDir);
        trainer.Run(m => Console.WriteLine(
            $"step {m.Step}: reward {m.Reward:F3} accuracy {m.Accuracy:P1} well-formed {m.FormatRate:P1} length {m.MeanLength:F0} KL {m.Kl:F5} " +
            $"loss {m.Loss:F4} groups {m.Groups}/{m.Groups + m.Skipped} grad norm {m.GradNorm:F3} {m.Seconds:F1} s ({m.RolloutSeconds:F1} s rollouts)" +
            (m.HeldoutAccuracy is { } h ? $" held-out {h:P1} harder {m.HarderAccuracy:P1}" : "")));
        var ps = trainer.Parameters;
        Checkpoint.ExportModel(ps, Path.Combine(outDir, "model"), model);
        Console.WriteLine($"exported {Path.Combine(outDir, "model")}");
    }
}
