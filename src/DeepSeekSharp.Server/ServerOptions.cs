namespace DeepSeekSharp.Server;

/// <summary>How <c>dss serve</c> listens. Defaults: 127.0.0.1:8080, no API key.</summary>
public sealed record ServerOptions
{
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 picks a free port (tests).</summary>
    public int Port { get; init; } = 8080;
    /// <summary>When set, /v1/* requires <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }
    /// <summary>The id /v1/models reports and requests may name (default: the model folder's name).</summary>
    public string? ModelId { get; init; }
}
