namespace DeepSeekSharp.Model;

/// <summary>Rows [Start, Start + Count) of a batch that continue one sequence's cache (at positions Cache.Length..).
/// <paramref name="Decoding"/>: the rows are decode steps (a token and its speculative drafts), attended like single
/// decode steps (absorbed) under <see cref="AttentionMode.Auto"/> so each row's result is the one it would get alone;
/// <paramref name="LogitRows"/>: how many of the last rows get logits when not every position does (default 1).</summary>
internal readonly record struct SequenceSlice(LatentKvCache Cache, int Start, int Count, bool Decoding = false, int LogitRows = 1);
