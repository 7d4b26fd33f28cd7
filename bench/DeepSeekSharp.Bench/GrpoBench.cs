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
