using System.CommandLine;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Server;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss serve --model PATH [--host 127.0.0.1] [--port 8080] [--max-batch N] [--context N]
/// [--api-key-file F | DSS_API_KEY | --api-key KEY] [--cors ORIGIN] [--shutdown-timeout S]</c>. SIGINT or SIGTERM
/// drains and exits 0; a second signal exits at once.</summary>
internal static class ServeCommand
{
    public const string ApiKeyVariable = "DSS_API_KEY";

    public static Command Create(TextWriter stdout)
    {
        Option<string> model = CliApp.ModelOptionWithDefault();
        var host = new Option<string>("--host") { Description = "address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "port to listen on", DefaultValueFactory = _ => 8080 };
        var maxBatch = new Option<int>("--max-batch") { Description = "sequences decoded together", DefaultValueFactory = _ => 8 };
        var context = new Option<int?>("--context") { Description = "positions per sequence (default: max_position_embeddings, at most 4096)" };
        var apiKeyFile = new Option<FileInfo?>("--api-key-file") { Description = $"require 'Authorization: Bearer KEY' on /v1/*, the key read from this file (or set {ApiKeyVariable})" };
        var apiKey = new Option<string?>("--api-key") { Description = $"the key itself (visible to other users in 'ps'; prefer --api-key-file or {ApiKeyVariable})" };
        var cors = new Option<string[]>("--cors") { Description = "a browser origin allowed to call the API (repeatable; * for any); others get 403", AllowMultipleArgumentsPerToken = false };
        var shutdownTimeout = new Option<double>("--shutdown-timeout") { Description = "seconds running requests may go on after SIGTERM/SIGINT", DefaultValueFactory = _ => 10 };
        var speculative = new Option<string>("--speculative")
        {
            Description = "default for requests without a 'speculative' field: mtp (the MTP module drafts, one pass verifies; same output) or off",
            DefaultValueFactory = _ => "off",
        };
        var cacheMemory = new Option<double>("--cache-memory")
        {
            Description = "MiB of memory for prompt prefixes shared between requests (0 = off)", DefaultValueFactory = _ => 512,
        };
        var cacheDir = new Option<string?>("--cache-dir") { Description = "spill evicted prefix blocks here and find them again after a restart" };
        var reasoningBudget = new Option<int?>("--reasoning-budget")
        {
            Description = "default most tokens of reasoning per reply (requests may set 'reasoning_budget' or 'reasoning_effort'); 0 = thinking off",
        };
        var thinking = new Option<string?>("--thinking") { Description = "default thinking on or off for requests that do not say (default: the chat template's)" };
        var loading = new ModelLoading();
        var cmd = new Command("serve", "Serve the model over an OpenAI-compatible HTTP API")
            { model, host, port, maxBatch, context, apiKeyFile, apiKey, cors, shutdownTimeout, speculative, cacheMemory, cacheDir, reasoningBudget, thinking };
        loading.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            // Everything that can be wrong with the options is reported before the weights load.
            string? key = ApiKey(r.GetValue(apiKeyFile), r.GetValue(apiKey));
            double timeout = r.GetValue(shutdownTimeout);
            if (!(timeout >= 0)) throw new ArgumentException($"--shutdown-timeout must be ≥ 0 seconds, got {timeout}");
            var options = new ServerOptions
            {
                Host = r.GetValue(host)!, Port = r.GetValue(port), ApiKey = key,
                CorsOrigins = r.GetValue(cors) ?? [], ShutdownTimeout = TimeSpan.FromSeconds(timeout),
                Speculation = GenerationCliOptions.ParseSpeculation(r.GetValue(speculative)),
                ReasoningBudget = r.GetValue(reasoningBudget),
                Thinking = r.GetValue(thinking) switch
                {
                    null => null,
                    "on" => true,
                    "off" => false,
                    var v => throw new ArgumentException($"--thinking '{v}' is not supported; supported: on, off"),
                },
            };
            options.Validate();
            double cacheMiB = r.GetValue(cacheMemory);
            if (!(cacheMiB >= 0)) throw new ArgumentException($"--cache-memory must be ≥ 0 MiB, got {cacheMiB}");
            if (cacheMiB == 0 && r.GetValue(cacheDir) is not null) throw new ArgumentException("--cache-dir needs a prefix cache: --cache-memory must be > 0");
            using ShutdownSignals signals = ShutdownSignals.Listen();
            string path = r.GetValue(model)!;
            Tokenizer tokenizer = Tokenizer.Load(path);
            DeepSeekModel weights = loading.Load(r, path, Console.Error);
            using PrefixCache? prefixes = PrefixCacheFor(weights, cacheMiB, r.GetValue(cacheDir));
            using var engine = new BatchScheduler(weights, tokenizer,
                new BatchOptions { MaxBatch = r.GetValue(maxBatch), ContextLength = r.GetValue(context), PrefixCache = prefixes });
            if (options.Speculation == Speculation.Mtp && !engine.CanSpeculate)
                Console.Error.WriteLine($"note: the model has no MTP module (num_nextn_predict_layers = {engine.Model.Config.NMtpLayers}); serving without speculation");
            await using var server = new DeepSeekServer(engine, options);
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct, signals.Token);
            await server.StartAsync(stop.Token);
            stdout.WriteLine($"serving '{server.ModelId}' at {server.Address} (max batch {engine.MaxBatch}, context {engine.ContextLength}, " +
                             $"{engine.CacheBytes / (1 << 20)} MiB latent cache" +
                             (options.Speculation == Speculation.Mtp && engine.CanSpeculate ? ", MTP speculation" : "") +
                             (prefixes is null ? "" : $", prefix cache {cacheMiB:0.#} MiB{(prefixes.Directory is { } d ? " + " + d : "")}") + "); " +
                             (server.RequiresApiKey ? "an API key is required" : "no API key: anyone who can reach this address can use it") +
                             (options.CorsOrigins.Count > 0 ? $"; browsers allowed from {string.Join(", ", options.CorsOrigins)}" : "") +
                             "; Ctrl+C or SIGTERM stops");
            stdout.Flush();
            try { await Task.Delay(Timeout.Infinite, stop.Token); }
            catch (OperationCanceledException) { }
            stdout.WriteLine($"{signals.Signal?.ToString() ?? "stop"} received: draining (up to {timeout:0.#} s; a second signal exits at once)");
            stdout.Flush();
            int cut = await server.ShutdownAsync();
            stdout.WriteLine(cut == 0 ? "stopped: every request finished" : $"stopped: {cut} request(s) cut off after {timeout:0.#} s");
            stdout.Flush();
            return 0;
        });
        return cmd;
    }

    /// <summary>The prefix cache, or null (said on stderr) when it is off or cannot work: serving goes on without it.</summary>
    private static PrefixCache? PrefixCacheFor(DeepSeekModel model, double mebibytes, string? dir)
    {
        if (mebibytes == 0) return null;
        try
        {
            return PrefixCache.For(model, (long)(mebibytes * 1048576), dir, log: m => Console.Error.WriteLine(m));
        }
        catch (ArgumentOutOfRangeException e)
        {
            Console.Error.WriteLine($"note: {CliApp.OneLine(e)}; serving without a prefix cache");
            return null;
        }
    }

    /// <summary>The key from --api-key-file, else DSS_API_KEY, else --api-key; at most one may be given, and a given
    /// key may not be empty (that would silently turn authentication off).</summary>
    internal static string? ApiKey(FileInfo? file, string? flag)
    {
        string? env = Environment.GetEnvironmentVariable(ApiKeyVariable);
        int given = (file is null ? 0 : 1) + (env is null ? 0 : 1) + (flag is null ? 0 : 1);
        if (given > 1) throw new ArgumentException($"give the API key one way: --api-key-file, {ApiKeyVariable} or --api-key");
        string? key, source;
        if (file is not null)
        {
            if (!file.Exists) throw new FileNotFoundException($"--api-key-file: {file.FullName} does not exist", file.FullName);
            (key, source) = (File.ReadAllText(file.FullName).Trim(), $"--api-key-file {file.FullName}");
        }
        else if (env is not null) (key, source) = (env.Trim(), ApiKeyVariable);
        else (key, source) = (flag, "--api-key");
        if (key is not null && key.Length == 0) throw new ArgumentException($"{source}: the API key is empty; leave it out to serve without a key");
        return key;
    }
}
