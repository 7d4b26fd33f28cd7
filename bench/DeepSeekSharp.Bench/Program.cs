using DeepSeekSharp.Bench;

// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- tokenizer [--mb 4]
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- mltokenizers
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- kernels   (BenchmarkDotNet)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- matmul    (GMAC/s per format and batch size)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- experts [FORMAT] [TOKENS] [ROUNDS]  (a prompt's tokens against 64 expert matrices from memory, one thread)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- stream [--in-cache] [FORMAT ...]  (one-token products over weights larger than the caches, GB/s beside the read probe; --in-cache: one thread, data in L2)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- r1-data OUT [EXAMPLES] [VOCAB]  (R1 cold-start data: tokenizer + SFT JSONL)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- grpo MODEL OUT [STEPS] [SEED]  (GRPO from a cold-start model with the recipe's settings; exports OUT/model)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- attention [--heads H] [DEPTH ...]  (GFLOP/s of decode's blocked absorbed attention, one thread; 16 heads unless --heads)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- fp8-panels COLS PANEL  (wide FP8 rows: file layout against sixteen rows interleaved by panels)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- gemm      (GFLOP/s of the training products)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- digest MODEL[:FORMAT[:mmap]] ...  (logits hashes to diff between builds)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- soak MODEL [STAGES] [MAX_BATCH] [QUANTIZE]  (load and soak of a dss serve process; STAGES concurrency:requests, default 1:200,8:500,32:2000)
// dotnet run -c Release --project bench/DeepSeekSharp.Bench -- chat-ttft MODEL [WORDS] [ROUNDS] [SERVE OPTIONS...]  (two-turn chat sharing a long system prompt: cold vs prefix-cached time to first token)
string mode = args.Length > 0 ? args[0] : "help";
string repo = Repo.Root();
const string Usage = "modes: tokenizer [--mb N] | mltokenizers | kernels [BenchmarkDotNet args] | matmul [FORMAT] | experts [FORMAT] [TOKENS] [ROUNDS] [COUNT] [ROWSxCOLS] | stream [--in-cache] [--tokens N] [--cols N] [--rows N] [--count N] [FORMAT ...] | r1-data OUT [N] [VOCAB] | grpo MODEL OUT [STEPS] [SEED] | attention [--heads H] [DEPTH ...] | fp8-panels COLS PANEL | fp8-lanes [OFFSET] | gemm | digest MODEL[:FORMAT[:mmap]] ... | soak MODEL [1:200,8:500,32:2000] [MAX_BATCH] [QUANTIZE] | chat-ttft MODEL [WORDS] [ROUNDS] [SERVE OPTIONS...]";
try
{
    switch (mode)
    {
        case "tokenizer":
            TokenizerBench.Run(repo, args.Length > 2 && args[1] == "--mb" ? BenchArgs.Number(args[2]) : 4);
            break;
        case "mltokenizers":
            MlTokenizersEvaluation.Run(repo);
            break;
        case "matmul":
            MatMulBench.Run(args.Length > 1 ? BenchArgs.Format(args[1]).ToString() : null);
            break;
        case "experts":
            (int rows, int cols) = args.Length > 5 ? BenchArgs.Pair(args[5], 'x', "ROWSxCOLS") : (1408, 2048);
            MatMulBench.Experts(BenchArgs.Format(args.Length > 1 ? args[1] : "Q8_0"), args.Length > 2 ? BenchArgs.Int(args[2]) : 12,
                args.Length > 3 ? BenchArgs.Int(args[3]) : 5, args.Length > 4 ? BenchArgs.Int(args[4]) : 64, rows, cols);
            break;
        case "fp8-lanes":
            DeepSeekSharp.Bench.Fp8LanesBench.Run(args.Length > 1 ? BenchArgs.Int(args[1], min: 0) : 0);
            break;
        case "fp8-panels":
            DeepSeekSharp.Bench.Fp8PanelsBench.Run(BenchArgs.Int(BenchArgs.Required(args, 1, "COLS")), BenchArgs.Int(BenchArgs.Required(args, 2, "PANEL")));
            break;
        case "stream":
            StreamBench.Run(args[1..]);
            break;
        case "r1-data":
            R1DataBench.Run(repo, BenchArgs.Required(args, 1, "OUT"), args.Length > 2 ? BenchArgs.Int(args[2]) : 20000, args.Length > 3 ? BenchArgs.Int(args[3]) : 512);
            break;
        case "grpo":
            GrpoBench.Run(BenchArgs.Required(args, 1, "MODEL"), BenchArgs.Required(args, 2, "OUT"), args.Length > 3 ? BenchArgs.Int(args[3]) : 3,
                args.Length > 4 ? (ulong)BenchArgs.Int(args[4], min: 0) : 2);
            break;
        case "attention":
            AttentionBench.Run(args[1..]);
            break;
        case "gemm":
            GemmBench.Run();
            break;
        case "digest":
            LogitsDigest.Run(args[1..]);
            break;
        case "soak":
            // STAGES: concurrency:requests,... e.g. 1:200,8:500,32:2000
            SoakBench.Run(BenchArgs.Required(args, 1, "MODEL"), (args.Length > 2 ? args[2] : "1:200,8:500,32:2000").Split(',')
                .Select(stage => BenchArgs.Pair(stage, ':', "CONCURRENCY:REQUESTS")).ToArray(),
                args.Length > 3 ? BenchArgs.Int(args[3]) : 8,
                args.Length > 4 ? args[4] : null);
            break;
        case "chat-ttft":
            ChatTtftBench.Run(BenchArgs.Required(args, 1, "MODEL"), args.Length > 2 ? BenchArgs.Int(args[2]) : 2000, args.Length > 3 ? BenchArgs.Int(args[3]) : 2, args.Length > 4 ? args[4..] : []);
            break;
        case "kernels":
            BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(Repo).Assembly).Run(args[1..]);
            break;
        default:
            Console.WriteLine(Usage);
            break;
    }
}
catch (BenchArgs.UsageException e)
{
    // A mistyped argument gets a sentence naming it, not a stack trace.
    Console.Error.WriteLine($"bench {mode}: {e.Message}");
    Console.Error.WriteLine(Usage);
    Environment.ExitCode = 2;
}

namespace DeepSeekSharp.Bench
{
    /// <summary>The benchmarks' command-line values, each refused with a sentence naming it.</summary>
    internal static class BenchArgs
    {
        public sealed class UsageException(string message) : Exception(message);

        private static readonly Linear.WeightFormat[] AllFormats = [.. Linear.WeightFormats.All.Select(t => t.Format)];

        /// <summary>A weight format by its command-line name, any case (q8_0, Q4_K, fp8), as <c>dss</c> parses one.</summary>
        public static Linear.WeightFormat Format(string name)
        {
            try { return Linear.WeightFormats.Parse(name, AllFormats); }
            catch (ArgumentException e) { throw new UsageException(Cli.CliApp.OneLine(e)); }
        }

        /// <summary>A whole number of at least <paramref name="min"/>.</summary>
        public static int Int(string text, int min = 1) =>
            int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int v) && v >= min ? v
                : throw new UsageException($"'{text}' is not a whole number of at least {min}");

        /// <summary>Two whole numbers joined by <paramref name="separator"/> (a soak stage 8:500, an expert shape 1408x2048).</summary>
        public static (int, int) Pair(string text, char separator, string form) =>
            text.Split(separator) is [string a, string b] ? (Int(a), Int(b)) : throw new UsageException($"'{text}' is not {form}");

        /// <summary>A positive number (a dot for the decimal point).</summary>
        public static double Number(string text) =>
            double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) && v > 0 && double.IsFinite(v) ? v
                : throw new UsageException($"'{text}' is not a positive number");

        /// <summary>The value after option <paramref name="name"/> in <paramref name="args"/>, if the option is there.</summary>
        public static int? Option(string[] args, string name)
        {
            int at = Array.IndexOf(args, name);
            if (at < 0) return null;
            return at + 1 < args.Length ? Int(args[at + 1]) : throw new UsageException($"{name} needs a value");
        }

        /// <summary>Argument <paramref name="i"/>, which the mode needs.</summary>
        public static string Required(string[] args, int i, string what) =>
            i < args.Length ? args[i] : throw new UsageException($"missing {what}");
    }

    internal static class Repo
    {
        /// <summary>The repository root: the nearest folder above the working directory holding DeepSeekSharp.slnx.</summary>
        public static string Root()
        {
            for (string? d = Directory.GetCurrentDirectory(); d is not null; d = Path.GetDirectoryName(d))
                if (File.Exists(Path.Combine(d, "DeepSeekSharp.slnx"))) return d;
            throw new DirectoryNotFoundException("run from inside the repository");
        }
    }
}
