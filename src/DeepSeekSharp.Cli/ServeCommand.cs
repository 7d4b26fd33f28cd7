using System.CommandLine;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Server;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss serve --model PATH [--host 127.0.0.1] [--port 8080] [--max-batch N] [--context N] [--api-key KEY]</c>.</summary>
internal static class ServeCommand
{
    public static Command Create(TextWriter stdout)
    {
        Option<string> model = CliApp.ModelOptionWithDefault();
        var host = new Option<string>("--host") { Description = "address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "port to listen on", DefaultValueFactory = _ => 8080 };
        var maxBatch = new Option<int>("--max-batch") { Description = "sequences decoded together", DefaultValueFactory = _ => 8 };
        var context = new Option<int?>("--context") { Description = "positions per sequence (default: max_position_embeddings, at most 4096)" };
        var apiKey = new Option<string?>("--api-key") { Description = "require 'Authorization: Bearer KEY' on /v1/*" };
        var loading = new ModelLoading();
        var cmd = new Command("serve", "Serve the model over an OpenAI-compatible HTTP API") { model, host, port, maxBatch, context, apiKey };
        loading.AddTo(cmd);
        cmd.SetAction(async (r, ct) =>
        {
            string path = r.GetValue(model)!;
            Tokenizer tokenizer = Tokenizer.Load(path);
            using var engine = new BatchScheduler(loading.Load(r, path, Console.Error), tokenizer,
                new BatchOptions { MaxBatch = r.GetValue(maxBatch), ContextLength = r.GetValue(context) });
            await using var server = new DeepSeekServer(engine, new ServerOptions
            {
                Host = r.GetValue(host)!, Port = r.GetValue(port), ApiKey = r.GetValue(apiKey),
            });
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            await server.StartAsync(stop.Token);
            stdout.WriteLine($"serving '{server.ModelId}' at {server.Address} (max batch {engine.MaxBatch}, context {engine.ContextLength}, " +
                             $"{engine.CacheBytes / (1 << 20)} MiB latent cache); Ctrl+C stops");
            stdout.Flush();
            await server.RunAsync(stop.Token);
            return 0;
        });
        return cmd;
    }
}
