namespace DeepSeekSharp.Model;

/// <summary>Rows [Start, Start + Count) of a batch that continue one sequence's cache (at positions Cache.Length..).</summary>
internal readonly record struct SequenceSlice(LatentKvCache Cache, int Start, int Count);
