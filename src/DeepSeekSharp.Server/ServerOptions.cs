namespace DeepSeekSharp.Server;

/// <summary>How <c>dss serve</c> listens. Defaults: 127.0.0.1:8080, no API key, no cross-origin requests, 10 s to
/// drain on shutdown.</summary>
public sealed record ServerOptions
{
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 picks a free port (tests).</summary>
    public int Port { get; init; } = 8080;
    /// <summary>When set, /v1/* requires <c>Authorization: Bearer KEY</c>. An empty key is an error, not "no key".</summary>
    public string? ApiKey { get; init; }
    /// <summary>The id /v1/models reports and requests may name (default: the model folder's name).</summary>
    public string? ModelId { get; init; }
    /// <summary>Browser origins allowed to call the API (e.g. <c>http://localhost:3000</c>, or <c>*</c>). A request that
    /// carries any other <c>Origin</c> is refused with 403, so a web page cannot drive a local server.</summary>
    public IReadOnlyList<string> CorsOrigins { get; init; } = [];
    /// <summary>On shutdown, how long running sequences may go on before they are ended with a stated reason.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Speculative decoding for requests that do not choose (their <c>speculative</c> field: "mtp" or "off").</summary>
    public Inference.Speculation Speculation { get; init; }
    /// <summary>Most reasoning tokens for requests that set no budget (null = no limit; 0 = thinking off).</summary>
    public int? ReasoningBudget { get; init; }
    /// <summary>Thinking on or off for requests that do not say (null = the chat template's default).</summary>
    public bool? Thinking { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad option.</summary>
    public void Validate()
    {
        if (ApiKey is not null && string.IsNullOrWhiteSpace(ApiKey))
            throw new ArgumentException("the API key is empty; leave it unset to serve without one", nameof(ApiKey));
        if (ReasoningBudget is < 0)
            throw new ArgumentOutOfRangeException(nameof(ReasoningBudget), ReasoningBudget, "the reasoning budget must be ≥ 0");
        if (ShutdownTimeout < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(ShutdownTimeout), ShutdownTimeout, "the shutdown timeout must be ≥ 0");
        foreach (string o in CorsOrigins)
            if (o != "*" && !(Uri.TryCreate(o, UriKind.Absolute, out Uri? u) && u.Scheme is "http" or "https" && u.AbsolutePath == "/"))
                throw new ArgumentException($"'{o}' is not an origin (scheme://host[:port], or *)", nameof(CorsOrigins));
    }
}
