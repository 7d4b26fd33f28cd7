using DeepSeekSharp.Inference;
using DeepSeekSharp.Model;
using DeepSeekSharp.Server;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Server;

/// <summary>The real server on a loopback port with the random v3-tiny checkpoint (real tokenizer), one per test
/// class; an API key is required.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public const string ApiKey = "test-key";
    public BatchScheduler Engine { get; private set; } = null!;
    public DeepSeekServer Server { get; private set; } = null!;
    public Uri BaseAddress => Server.Address;
    public string ModelId => Server.ModelId;

    public async Task InitializeAsync()
    {
        var model = DeepSeekModel.Load(RandomModel.V3Tiny);
        Engine = new BatchScheduler(model, Tokenizer.Load(RandomModel.V3Tiny),
            new BatchOptions { MaxBatch = 8, ContextLength = 512, PrefillChunk = 64, PrefixCache = PrefixCache.For(model, 64 << 20) });
        Server = new DeepSeekServer(Engine, new ServerOptions { Port = 0, ApiKey = ApiKey, ModelId = "v3-tiny-random" });
        await Server.StartAsync();
    }

    public HttpClient Http()
    {
        var http = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new("Bearer", ApiKey);
        return http;
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Engine.Dispose();
    }
}
