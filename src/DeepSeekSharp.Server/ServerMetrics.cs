using DeepSeekSharp.Inference;
using Prometheus;

namespace DeepSeekSharp.Server;

/// <summary>Prometheus metrics of one server (its own registry, so several servers in a process stay apart).</summary>
internal sealed class ServerMetrics
{
    public readonly CollectorRegistry Registry = Metrics.NewCustomRegistry();
    public readonly Counter Requests;
    public readonly Counter CompletionTokens;
    public readonly Counter PromptTokens;
    public readonly Counter DraftTokens;
    public readonly Counter AcceptedDraftTokens;

    public ServerMetrics(BatchScheduler engine)
    {
        MetricFactory f = Metrics.WithCustomRegistry(Registry);
        Requests = f.CreateCounter("dss_requests_total", "HTTP requests by endpoint and status code", "endpoint", "status");
        CompletionTokens = f.CreateCounter("dss_completion_tokens_total", "Tokens generated");
        PromptTokens = f.CreateCounter("dss_prompt_tokens_total", "Prompt tokens processed");
        DraftTokens = f.CreateCounter("dss_draft_tokens_total", "Tokens drafted by MTP speculation");
        AcceptedDraftTokens = f.CreateCounter("dss_draft_accepted_tokens_total", "Drafted tokens the model accepted");
        Gauge queue = f.CreateGauge("dss_queue_depth", "Requests waiting for a sequence slot");
        Gauge active = f.CreateGauge("dss_active_sequences", "Sequences in the running batch");
        Gauge speed = f.CreateGauge("dss_decode_tokens_per_second", "Tokens per second of the last decode step, all sequences together");
        Gauge cache = f.CreateGauge("dss_kv_cache_bytes", "Latent KV cache allocated for all sequence slots");
        PrefixCache? prefixes = engine.PrefixCache;
        Gauge hitRate = f.CreateGauge("dss_prefix_cache_hit_rate", "Share of prompt tokens restored from the prefix cache since the start");
        Gauge hitTokens = f.CreateGauge("dss_prefix_cache_hit_tokens", "Prompt tokens restored from the prefix cache since the start");
        Gauge prefixBytes = f.CreateGauge("dss_prefix_cache_bytes", "Prefix-cache blocks held, by place", "where");
        Gauge evictions = f.CreateGauge("dss_prefix_cache_evictions", "Blocks evicted from memory since the start");
        Gauge diskErrors = f.CreateGauge("dss_prefix_cache_disk_errors", "Block files ignored or writes failed since the start");
        Registry.AddBeforeCollectCallback(() =>
        {
            queue.Set(engine.QueueDepth);
            active.Set(engine.ActiveSequences);
            speed.Set(engine.DecodeTokensPerSecond);
            cache.Set(engine.CacheBytes);
            if (prefixes is null) return;
            PrefixCacheStats p = prefixes.Stats;
            hitRate.Set(p.HitRate);
            hitTokens.Set(p.HitTokens);
            prefixBytes.WithLabels("memory").Set(p.MemoryBytes);
            prefixBytes.WithLabels("disk").Set(p.DiskBytes);
            evictions.Set(p.Evictions);
            diskErrors.Set(p.DiskErrors);
        });
    }
}
