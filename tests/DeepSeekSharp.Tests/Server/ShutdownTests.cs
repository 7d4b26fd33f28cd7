using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Server;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Server;

/// <summary>Shutdown: <c>dss serve</c> started as a background job of a script (SIGINT ignored by the shell's
/// rules) stops on SIGTERM and on SIGINT — running streams finish, or end with a stated reason after the timeout —
/// and exits 0; a second signal exits at once; while draining, /health says so and new requests get 503.</summary>
public class ShutdownTests
{
    private static readonly string User = """[{"role":"user","content":"Tell me a long story."}]""";

    /// <summary>A request; EOS (id 1) is biased away so every reply runs to max_tokens, however the random model leans.</summary>
    private static StringContent Body(int maxTokens, bool stream) =>
        new($$"""{"messages":{{User}},"max_tokens":{{maxTokens}},"temperature":0,"logit_bias":{"1":-100},"stream":{{(stream ? "true" : "false")}}}""", Encoding.UTF8, "application/json");

    /// <summary><c>dss serve</c> run by <c>bash -c "dss serve ... &amp; wait"</c>: the way a script starts it.</summary>
    private sealed class BackgroundServer : IDisposable
    {
        private readonly Process _shell;
        private readonly StringBuilder _output = new();
        public readonly int Pid;
        public readonly Uri Address;

        public BackgroundServer(double shutdownTimeout, int context = 512)
        {
            string dss = Path.Combine(AppContext.BaseDirectory, "dss.dll");
            string script = $"dotnet '{dss}' serve --model '{RandomModel.V3Tiny}' --port 0 --max-batch 4 --context {context} --shutdown-timeout {shutdownTimeout} & " +
                            "pid=$!; echo \"pid $pid\"; wait $pid; echo \"exit $?\"";
            _shell = Process.Start(new ProcessStartInfo("bash", ["-c", script]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            _shell.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
            _shell.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
            _shell.BeginOutputReadLine();
            _shell.BeginErrorReadLine();
            var clock = Stopwatch.StartNew();
            Match pid = Match.Empty, at = Match.Empty;
            while (clock.Elapsed < TimeSpan.FromSeconds(60) && !(pid.Success && at.Success))
            {
                Thread.Sleep(20);
                pid = Regex.Match(Output, @"pid (\d+)");
                at = Regex.Match(Output, @"at (http://[^ ]+/?) ");
                Assert.False(_shell.HasExited && !at.Success, Output);
            }
            Assert.True(at.Success, "the server did not start within 60 s:\n" + Output);
            Pid = int.Parse(pid.Groups[1].Value);
            Address = new Uri(at.Groups[1].Value);
        }

        public string Output { get { lock (_output) return _output.ToString(); } }

        public void Signal(string name) => Process.Start("kill", [$"-{name}", Pid.ToString()])!.WaitForExit();

        /// <summary>The server's exit status as the script saw it.</summary>
        public int WaitForExit(TimeSpan limit)
        {
            Assert.True(_shell.WaitForExit(limit), $"still running after {limit.TotalSeconds} s:\n{Output}");
            _shell.WaitForExit(); // drain the output
            Match m = Regex.Match(Output, @"exit (\d+)");
            Assert.True(m.Success, Output);
            return int.Parse(m.Groups[1].Value);
        }

        public HttpClient Http() => new() { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(120) };

        public void Dispose()
        {
            if (!_shell.HasExited) { try { Process.Start("kill", ["-KILL", Pid.ToString()])!.WaitForExit(); } catch (Exception) { } }
            _shell.Dispose();
        }
    }

    /// <summary>Opens a streaming request and waits for its first event, so it is running on the server.</summary>
    private static async Task<StreamReader> OpenStream(HttpClient http, int maxTokens)
    {
        var req = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = Body(maxTokens, stream: true) };
        HttpResponseMessage r = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var reader = new StreamReader(await r.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: ", await reader.ReadLineAsync());
        return reader;
    }

    /// <summary>A finish chunk: the reply ended normally (at max_tokens, or at EOS should the random model pick it).</summary>
    private static bool Finished(string e) => e.Contains("\"finish_reason\":\"length\"", StringComparison.Ordinal) || e.Contains("\"finish_reason\":\"stop\"", StringComparison.Ordinal);

    /// <summary>The remaining events of a stream, without the "data: " prefix.</summary>
    private static async Task<List<string>> Rest(StreamReader reader)
    {
        var events = new List<string>();
        while (await reader.ReadLineAsync() is { } line)
            if (line.StartsWith("data: ", StringComparison.Ordinal)) events.Add(line["data: ".Length..]);
        return events;
    }

    [Theory]
    [InlineData("TERM")]
    [InlineData("INT")]
    public async Task Signal_WhileFourStreamsRun_LetsThemFinish_AndExitsZero(string signal)
    {
        using var server = new BackgroundServer(shutdownTimeout: 60);
        using HttpClient http = server.Http();
        StreamReader[] streams = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => OpenStream(http, 300)));
        server.Signal(signal);
        List<string>[] rest = await Task.WhenAll(streams.Select(Rest));
        foreach (List<string> events in rest)
        {
            Assert.Equal("[DONE]", events[^1]);
            Assert.Contains(events, Finished);
            Assert.DoesNotContain(events, e => e.Contains("\"error\"", StringComparison.Ordinal));
        }
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains($"SIG{signal} received: draining", server.Output);
        Assert.Contains("stopped: every request finished", server.Output);
    }

    [Fact]
    public async Task StreamsStillRunningAtTheTimeout_EndWithAnErrorEventSayingWhy_ThenDone()
    {
        using var server = new BackgroundServer(shutdownTimeout: 0, context: 4096);
        using HttpClient http = server.Http();
        // Replies far too long to finish before the signal (the engine generates them whether or not they are read).
        StreamReader[] streams = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => OpenStream(http, 4000)));
        server.Signal("TERM");
        List<string>[] rest = await Task.WhenAll(streams.Select(Rest));
        foreach (List<string> events in rest)
        {
            Assert.Equal("[DONE]", events[^1]);
            JsonElement error = JsonDocument.Parse(events[^2]).RootElement.GetProperty("error");
            Assert.Equal("server_shutting_down", error.GetProperty("code").GetString());
            Assert.Contains("shutting down", error.GetProperty("message").GetString());
        }
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("4 request(s) cut off", server.Output);
    }

    [Fact]
    public async Task ASecondSignal_ExitsAtOnce()
    {
        using var server = new BackgroundServer(shutdownTimeout: 600, context: 4096);
        using HttpClient http = server.Http();
        using StreamReader stream = await OpenStream(http, 4000); // far longer than the test
        server.Signal("TERM");
        for (int i = 0; i < 200 && !server.Output.Contains("draining", StringComparison.Ordinal); i++) await Task.Delay(10);
        server.Signal("TERM");
        int code = server.WaitForExit(TimeSpan.FromSeconds(20));
        Assert.NotEqual(0, code); // killed by the signal's default action, not a clean drain
    }

    [Fact]
    public async Task WhileDraining_HealthSaysSo_AndNewRequestsGet503()
    {
        using var engine = new BatchScheduler(DeepSeekModel.Load(RandomModel.V3Tiny), Tokenizer.Load(RandomModel.V3Tiny),
            new BatchOptions { MaxBatch = 2, ContextLength = 4096 });
        await using var server = new DeepSeekServer(engine, new ServerOptions { Port = 0, ShutdownTimeout = TimeSpan.FromSeconds(60) });
        await server.StartAsync();
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromSeconds(120) };
        // The engine generates a reply whether or not the client reads it, so the drain lasts as long as the reply
        // takes to generate: 4,000 tokens take seconds even on the fastest path, the two requests below milliseconds.
        // (A 450-token reply once finished first; the drain ended and the listener was gone before /health was asked.)
        StreamReader stream = await OpenStream(http, 4000);
        Task<int> shutdown = server.ShutdownAsync();

        HttpResponseMessage health = await http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        Assert.Equal("draining", JsonDocument.Parse(await health.Content.ReadAsStringAsync()).RootElement.GetProperty("status").GetString());
        HttpResponseMessage refused = await http.PostAsync("/v1/chat/completions", Body(2, stream: false));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("server_shutting_down", JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString());

        // The running reply still streams during the drain; its client then leaves, which ends the sequence, and with
        // it the drain: nothing was cut off. (That a drained reply runs to its end is the signal tests' business.)
        string? line;
        do line = await stream.ReadLineAsync(); while (line == "");
        Assert.StartsWith("data: {", line);
        stream.Dispose();
        Assert.Equal(0, await shutdown.WaitAsync(TimeSpan.FromSeconds(60)));
    }
}
