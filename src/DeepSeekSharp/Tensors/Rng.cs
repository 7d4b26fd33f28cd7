namespace DeepSeekSharp.Tensors;

/// <summary>xorshift64* seeded through SplitMix64: tiny, fast, and the same sequence on every machine and runtime,
/// so a seed reproduces the same tokens anywhere.</summary>
public sealed class Rng
{
    private ulong _state;

    public Rng(ulong seed) => Reseed(seed);

    public void Reseed(ulong seed)
    {
        ulong z = seed + 0x9E3779B97F4A7C15UL;                  // SplitMix64 step
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        _state = (z ^ (z >> 31)) | 1;                          // never zero
    }

    public ulong NextUInt64()
    {
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return _state * 0x2545F4914F6CDD1DUL;
    }

    /// <summary>Uniform in [0, 1) with 53 bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));
}
