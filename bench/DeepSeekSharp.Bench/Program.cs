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
switch (mode)
{
    case "tokenizer":
        TokenizerBench.Run(repo, args.Length > 2 && args[1] == "--mb" ? double.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 4);
        break;
    case "mltokenizers":
        MlTokenizersEvaluation.Run(repo);
        break;
    case "matmul":
        MatMulBench.Run(args.Length > 1 ? args[1] : null);
        break;
    case "experts":
        MatMulBench.Experts(Enum.Parse<DeepSeekSharp.Linear.WeightFormat>(args.Length > 1 ? args[1] : "Q8_0", true), args.Length > 2 ? int.Parse(args[2]) : 12,
            args.Length > 3 ? int.Parse(args[3]) : 5, args.Length > 4 ? int.Parse(args[4]) : 64,
            args.Length > 5 ? int.Parse(args[5].Split('x')[0]) : 1408, args.Length > 5 ? int.Parse(args[5].Split('x')[1]) : 2048);
        break;
    case "fp8-lanes":
        DeepSeekSharp.Bench.Fp8LanesBench.Run(args.Length > 1 ? int.Parse(args[1]) : 0);
        break;
    case "fp8-panels":
        DeepSeekSharp.Bench.Fp8PanelsBench.Run(int.Parse(args[1]), int.Parse(args[2]));
        break;
    case "stream":
        StreamBench.Run(args[1..]);
        break;
    case "r1-data":
        R1DataBench.Run(repo, args[1], args.Length > 2 ? int.Parse(args[2]) : 20000, args.Length > 3 ? int.Parse(args[3]) : 512);
        break;
    case "grpo":
        GrpoBench.Run(args[1], args[2], args.Length > 3 ? int.Parse(args[3]) : 3, args.Length > 4 ? ulong.Parse(args[4]) : 2);
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
        SoakBench.Run(args[1], (args.Length > 2 ? args[2] : "1:200,8:500,32:2000").Split(',')
            .Select(st => st.Split(':')).Select(p => (int.Parse(p[0]), int.Parse(p[1]))).ToArray(), args.Length > 3 ? int.Parse(args[3]) : 8,
            args.Length > 4 ? args[4] : null);
        break;
    case "chat-ttft":
        ChatTtftBench.Run(args[1], args.Length > 2 ? int.Parse(args[2]) : 2000, args.Length > 3 ? int.Parse(args[3]) : 2, args.Length > 4 ? args[4..] : []);
        break;
    case "kernels":
        BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(Repo).Assembly).Run(args[1..]);
        break;
    default:
        Console.WriteLine("modes: tokenizer [--mb N] | mltokenizers | kernels [BenchmarkDotNet args] | matmul [FORMAT] | experts [FORMAT] [TOKENS] [ROUNDS] [COUNT] [ROWSxCOLS] | stream [--in-cache] [--tokens N] [--cols N] [FORMAT ...] | r1-data OUT [N] [VOCAB] | grpo MODEL OUT [STEPS] [SEED] | attention [--heads H] [DEPTH ...] | fp8-panels COLS PANEL | fp8-lanes [OFFSET] | gemm | digest MODEL[:FORMAT[:mmap]] ... | soak MODEL [1:200,8:500,32:2000] [MAX_BATCH] [QUANTIZE] | chat-ttft MODEL [WORDS] [ROUNDS] [SERVE OPTIONS...]");
        break;
}

namespace DeepSeekSharp.Bench
{
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
