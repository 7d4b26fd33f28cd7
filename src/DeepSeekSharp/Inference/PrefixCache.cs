using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Inference;

/// <summary>Figures of a <see cref="PrefixCache"/> (for /metrics).</summary>
public readonly record struct PrefixCacheStats(long HitTokens, long MissTokens, long MemoryBytes, long DiskBytes, long Blocks, long Evictions, long DiskErrors)
{
    public double HitRate => HitTokens + MissTokens == 0 ? 0 : (double)HitTokens / (HitTokens + MissTokens);
}

/// <summary>Prompt prefixes already computed, shared by every sequence: the latent cache of each full block of
/// <see cref="BlockSize"/> positions, keyed by a hash chain over the model's identity and every token up to the block's
/// end (so a block is found only after the same tokens in the same order). A request copies the longest run of cached
/// blocks into its own cache and prefills only the rest; the rows are exactly what the prefill would have written, so a
/// warm prompt gives bit-identical results to a cold one. Blocks also hold the MTP module's rows where the sequence that
/// made them had them, shifted by one position (the module's row at i depends on token i + 1): a block of positions
/// [kB, kB + B) keeps MTP rows kB − 1 .. kB + B − 2.
/// <para>Least recently used blocks are evicted beyond the memory budget; with a directory they are first written
/// there (temporary file, then rename, with a SHA-256 of the contents), found again by key after a restart, and any
/// file whose checksum, model or shape does not match is reported and never used. Thread-safe.</para></summary>
public sealed class PrefixCache : IDisposable
{
    public const int DefaultBlockSize = 64;
    private static ReadOnlySpan<byte> Magic => "DSSPCB1\0"u8;

    private sealed class Block(UInt128 key, int[] tokens, float[] main)
    {
        public readonly UInt128 Key = key;
        public readonly int[] Tokens = tokens;
        public readonly float[] Main = main;     // [layers][B, width]
        public float[]? Mtp;                     // [mtp layers][B, width], row r = position kB − 1 + r
        public LinkedListNode<Block>? Node;
        public long Bytes => (Main.LongLength + (Mtp?.LongLength ?? 0)) * sizeof(float);
    }

    private readonly object _lock = new();
    private readonly Dictionary<UInt128, Block> _blocks = [];
    private readonly LinkedList<Block> _lru = new();   // most recently used first
    private readonly byte[] _modelId;
    private readonly int _layers, _mtpLayers, _width;
    private readonly long _budget;
    private readonly string? _dir;
    private readonly Action<string> _log;
    private long _bytes, _hits, _misses, _evictions, _diskBytes, _diskErrors;
    private bool _diskBroken;

    /// <param name="modelId">identifies the weights (<see cref="ModelIdentity"/>): blocks of another model never match</param>
    /// <param name="memoryBytes">budget for blocks in memory; must hold at least one block</param>
    /// <param name="directory">where evicted blocks go and are found again after a restart (null: memory only)</param>
    /// <param name="log">problems with the directory (the cache goes on without it)</param>
    public PrefixCache(byte[] modelId, ModelConfig config, int mtpLayers, long memoryBytes, string? directory = null, int blockSize = DefaultBlockSize,
        Action<string>? log = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        _modelId = modelId;
        _layers = config.NLayers;
        _mtpLayers = mtpLayers;
        _width = config.LatentCacheWidth;
        BlockSize = blockSize;
        _log = log ?? (_ => { });
        long blockBytes = (long)(_layers + _mtpLayers) * blockSize * _width * sizeof(float);
        if (memoryBytes < blockBytes)
            throw new ArgumentOutOfRangeException(nameof(memoryBytes), memoryBytes,
                $"the prefix cache's memory ({memoryBytes / 1048576.0:0.##} MiB) is smaller than one block ({blockBytes / 1048576.0:0.##} MiB: {blockSize} positions × {_layers + _mtpLayers} layers × {_width} values)");
        _budget = memoryBytes;
        if (directory is not null) _dir = OpenDirectory(directory);
    }

    /// <summary>For a model: its identity, its MTP layers and its latent-cache shape.</summary>
    public static PrefixCache For(DeepSeekModel model, long memoryBytes, string? directory = null, int blockSize = DefaultBlockSize, Action<string>? log = null) =>
        new(ModelIdentity(model), model.Config, model.MtpLayers, memoryBytes, directory, blockSize, log);

    public int BlockSize { get; }
    /// <summary>The folder blocks spill to (the model's own subfolder), or null when memory only or it failed.</summary>
    public string? Directory => _diskBroken ? null : _dir;

    public PrefixCacheStats Stats
    {
        get { lock (_lock) return new(_hits, _misses, _bytes, _diskBytes, _blocks.Count, _evictions, _diskErrors); }
    }

    /// <summary>A SHA-256 over the model's configuration, its latent cache's format and every weight matrix's format,
    /// shape and first and last rows' values: equal for the same checkpoint loaded the same way, different for other
    /// weights or formats (rows cached as bfloat16 are never restored into a float32 cache, nor the other way).</summary>
    public static byte[] ModelIdentity(DeepSeekModel model)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData(System.Text.Encoding.UTF8.GetBytes(model.Config.ToString()));
        h.AppendData(System.Text.Encoding.UTF8.GetBytes($"latent cache {model.CacheFormat}"));
        Span<byte> dims = stackalloc byte[12];
        float[] row = [];
        foreach (Linear.Matrix m in model.Weights.AllMatrices())
        {
            BinaryPrimitives.WriteInt32LittleEndian(dims, (int)m.Traits.Format);
            BinaryPrimitives.WriteInt32LittleEndian(dims[4..], m.Rows);
            BinaryPrimitives.WriteInt32LittleEndian(dims[8..], m.Cols);
            h.AppendData(dims);
            if (row.Length != m.Cols) row = new float[m.Cols];
            foreach (int r in new[] { 0, m.Rows - 1 }) // values, not stored bytes: some formats keep rows interleaved
            {
                m.DequantizeRow(r, row);
                h.AppendData(MemoryMarshal.AsBytes(row.AsSpan()));
            }
        }
        return h.GetHashAndReset();
    }

    /// <summary>Copies the longest run of cached blocks of <paramref name="tokens"/> (at most <paramref name="limit"/>
    /// positions) into the empty caches; returns the positions restored. With <paramref name="mtp"/>, only blocks that
    /// carry MTP rows count, and the MTP cache is restored one position behind the main one.</summary>
    public int Restore(ReadOnlySpan<int> tokens, int limit, LatentKvCache main, LatentKvCache? mtp)
    {
        if (main.Length != 0 || mtp is { Length: not 0 }) throw new InvalidOperationException("restore into empty caches");
        int b = BlockSize, pos = 0;
        limit = Math.Min(Math.Min(limit, tokens.Length), main.Capacity);
        lock (_lock)
        {
            UInt128 key = Seed();
            while (pos + b <= limit)
            {
                key = Next(key, tokens.Slice(pos, b));
                Block? block = Find(key, tokens.Slice(pos, b));
                if (block is null || mtp is not null && block.Mtp is null) break;
                Touch(block);
                for (int l = 0; l < _layers; l++)
                    main.WriteRows(l, pos, block.Main.AsSpan(l * b * _width, b * _width));
                if (mtp is not null)
                    for (int l = 0; l < _mtpLayers; l++)
                    {
                        int skip = pos == 0 ? 1 : 0; // the first block's row −1 does not exist
                        mtp.WriteRows(l, pos - 1 + skip, block.Mtp!.AsSpan((l * b + skip) * _width, (b - skip) * _width));
                    }
                pos += b;
            }
            _hits += pos;
            _misses += tokens.Length - pos;
        }
        main.Commit(pos);
        if (mtp is not null && pos > 0) mtp.Commit(pos - 1);
        return pos;
    }

    /// <summary>How many positions <see cref="Restore"/> would give now (blocks in memory or on disk), without copying.</summary>
    public int Probe(ReadOnlySpan<int> tokens, int limit, bool needMtp)
    {
        int b = BlockSize, pos = 0;
        limit = Math.Min(limit, tokens.Length);
        lock (_lock)
        {
            UInt128 key = Seed();
            while (pos + b <= limit)
            {
                key = Next(key, tokens.Slice(pos, b));
                if (_blocks.TryGetValue(key, out Block? block))
                {
                    if (!block.Tokens.AsSpan().SequenceEqual(tokens.Slice(pos, b)) || needMtp && block.Mtp is null) break;
                }
                else if (Directory is null || !File.Exists(FileOf(key)) || needMtp && !HasMtpOnDisk(FileOf(key))) break;
                pos += b;
            }
        }
        return pos;
    }

    /// <summary>Keeps every full block of the first <paramref name="count"/> tokens (their rows are in
    /// <paramref name="main"/>, and in <paramref name="mtp"/> as far as it reaches) that is not cached yet.</summary>
    public void Store(ReadOnlySpan<int> tokens, int count, LatentKvCache main, LatentKvCache? mtp)
    {
        int b = BlockSize;
        count = Math.Min(Math.Min(count, tokens.Length), main.Length);
        lock (_lock)
        {
            UInt128 key = Seed();
            for (int pos = 0; pos + b <= count; pos += b)
            {
                key = Next(key, tokens.Slice(pos, b));
                bool mtpRows = mtp is not null && _mtpLayers > 0 && mtp.Length >= pos + b - 1;
                if (_blocks.TryGetValue(key, out Block? block))
                {
                    if (block.Mtp is null && mtpRows)
                    {
                        block.Mtp = CopyMtp(mtp!, pos);
                        _bytes += block.Mtp.LongLength * sizeof(float);
                    }
                    Touch(block);
                    continue;
                }
                var main_ = new float[_layers * b * _width];
                for (int l = 0; l < _layers; l++)
                    main.ReadRows(l, pos, main_.AsSpan(l * b * _width, b * _width));
                block = new Block(key, tokens.Slice(pos, b).ToArray(), main_) { Mtp = mtpRows ? CopyMtp(mtp!, pos) : null };
                Add(block);
            }
            Evict();
        }
    }

    private float[] CopyMtp(LatentKvCache mtp, int pos)
    {
        int b = BlockSize;
        var rows = new float[_mtpLayers * b * _width];
        int skip = pos == 0 ? 1 : 0;
        for (int l = 0; l < _mtpLayers; l++)
            mtp.ReadRows(l, pos - 1 + skip, rows.AsSpan((l * b + skip) * _width, (b - skip) * _width));
        return rows;
    }

    private UInt128 Seed() => Hash(_modelId);

    private static UInt128 Next(UInt128 parent, ReadOnlySpan<int> tokens)
    {
        Span<byte> buffer = stackalloc byte[16 + tokens.Length * sizeof(int)];
        BinaryPrimitives.WriteUInt128LittleEndian(buffer, parent);
        MemoryMarshal.AsBytes(tokens).CopyTo(buffer[16..]); // little-endian machines only run this code (x64, arm64)
        return Hash(buffer);
    }

    private static UInt128 Hash(ReadOnlySpan<byte> data)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(data, digest);
        return BinaryPrimitives.ReadUInt128LittleEndian(digest);
    }

    private Block? Find(UInt128 key, ReadOnlySpan<int> tokens)
    {
        if (_blocks.TryGetValue(key, out Block? block)) return block.Tokens.AsSpan().SequenceEqual(tokens) ? block : null;
        if (Directory is null) return null;
        block = Load(key, tokens);
        if (block is null) return null;
        Add(block);
        Evict();
        return _blocks.ContainsKey(key) ? block : null;
    }

    private void Add(Block block)
    {
        _blocks[block.Key] = block;
        block.Node = _lru.AddFirst(block);
        _bytes += block.Bytes;
    }

    private void Touch(Block block)
    {
        _lru.Remove(block.Node!);
        _lru.AddFirst(block.Node!);
    }

    /// <summary>Drops least recently used blocks (to disk when there is a directory) until the budget holds.
    /// Restores copy rows out under the lock, so no block is ever in use when it goes.</summary>
    private void Evict()
    {
        while (_bytes > _budget && _lru.Last is { } last)
        {
            Block block = last.Value;
            _lru.RemoveLast();
            _blocks.Remove(block.Key);
            _bytes -= block.Bytes;
            _evictions++;
            Spill(block);
        }
    }

    /// <summary>Writes every block in memory to the directory (at shutdown, so a restart finds them).</summary>
    public void Flush()
    {
        lock (_lock)
            foreach (Block block in _lru) Spill(block);
    }

    public void Dispose() => Flush();

    // ---- the directory ----

    private string? OpenDirectory(string directory)
    {
        string dir = Path.Combine(directory, Convert.ToHexStringLower(_modelId, 0, 8));
        try
        {
            System.IO.Directory.CreateDirectory(dir);
            foreach (string tmp in System.IO.Directory.EnumerateFiles(dir, "*.tmp")) File.Delete(tmp); // a spill cut short
            string probe = Path.Combine(dir, ".probe");
            File.WriteAllBytes(probe, [1]);
            File.Delete(probe);
            foreach (string f in System.IO.Directory.EnumerateFiles(dir, "*.blk")) _diskBytes += new FileInfo(f).Length;
            return dir;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log($"prefix cache: cannot use {directory} ({e.Message}); caching in memory only");
            _diskBroken = true;
            return null;
        }
    }

    private string FileOf(UInt128 key) => Path.Combine(_dir!, key.ToString("x32") + ".blk");

    private void Spill(Block block)
    {
        if (Directory is null) return;
        string path = FileOf(block.Key);
        try
        {
            if (File.Exists(path) && (block.Mtp is null || HasMtpOnDisk(path))) return;
            byte[] bytes = Serialize(block);
            string tmp = path + "." + Environment.ProcessId + ".tmp";
            File.WriteAllBytes(tmp, bytes);
            long old = File.Exists(path) ? new FileInfo(path).Length : 0;
            File.Move(tmp, path, overwrite: true);
            _diskBytes += bytes.Length - old;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _diskErrors++;
            _diskBroken = true;
            _log($"prefix cache: writing {path} failed ({e.Message}); caching in memory only from now on");
        }
    }

    private bool HasMtpOnDisk(string path)
    {
        if (!File.Exists(path)) return false;
        using FileStream f = File.OpenRead(path);
        Span<byte> header = stackalloc byte[HeaderBytes];
        return f.Read(header) == HeaderBytes && BinaryPrimitives.ReadInt32LittleEndian(header[(8 + 4 + 32 + 4)..]) > 0;
    }

    // magic (8), version (4), model id (32), layers (4), MTP layers stored (4), width (4), block size (4), key (16)
    private const int HeaderBytes = 8 + 4 + 32 + 4 + 4 + 4 + 4 + 16;

    private byte[] Serialize(Block block)
    {
        int b = BlockSize, mtpLayers = block.Mtp is null ? 0 : _mtpLayers;
        long floats = block.Main.LongLength + (block.Mtp?.LongLength ?? 0);
        var bytes = new byte[HeaderBytes + b * sizeof(int) + floats * sizeof(float) + 32];
        Span<byte> s = bytes;
        Magic.CopyTo(s);
        BinaryPrimitives.WriteInt32LittleEndian(s[8..], 1);
        _modelId.CopyTo(s[12..]);
        BinaryPrimitives.WriteInt32LittleEndian(s[44..], _layers);
        BinaryPrimitives.WriteInt32LittleEndian(s[48..], mtpLayers);
        BinaryPrimitives.WriteInt32LittleEndian(s[52..], _width);
        BinaryPrimitives.WriteInt32LittleEndian(s[56..], b);
        BinaryPrimitives.WriteUInt128LittleEndian(s[60..], block.Key);
        int at = HeaderBytes;
        MemoryMarshal.AsBytes(block.Tokens.AsSpan()).CopyTo(s[at..]);
        at += b * sizeof(int);
        MemoryMarshal.AsBytes(block.Main.AsSpan()).CopyTo(s[at..]);
        at += block.Main.Length * sizeof(float);
        if (block.Mtp is not null) MemoryMarshal.AsBytes(block.Mtp.AsSpan()).CopyTo(s[at..]);
        SHA256.HashData(s[..^32], s[^32..]);
        return bytes;
    }

    /// <summary>A block file, checked end to end; null (reported) when it is not this model's block for these tokens.</summary>
    private Block? Load(UInt128 key, ReadOnlySpan<int> tokens)
    {
        string path = FileOf(key);
        byte[] bytes;
        try
        {
            if (!File.Exists(path)) return null;
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Reject(path, e.Message);
        }
        int b = BlockSize;
        ReadOnlySpan<byte> s = bytes;
        if (s.Length < HeaderBytes + 32 || !s[..8].SequenceEqual(Magic)) return Reject(path, "not a prefix-cache block");
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(s[..^32], digest);
        if (!digest.SequenceEqual(s[^32..])) return Reject(path, "checksum mismatch (corrupt or cut short)");
        if (BinaryPrimitives.ReadInt32LittleEndian(s[8..]) != 1) return Reject(path, "unknown version");
        if (!s.Slice(12, 32).SequenceEqual(_modelId)) return Reject(path, "written for another model");
        int layers = BinaryPrimitives.ReadInt32LittleEndian(s[44..]), mtpLayers = BinaryPrimitives.ReadInt32LittleEndian(s[48..]);
        int width = BinaryPrimitives.ReadInt32LittleEndian(s[52..]), blockSize = BinaryPrimitives.ReadInt32LittleEndian(s[56..]);
        if (layers != _layers || width != _width || blockSize != b || mtpLayers != 0 && mtpLayers != _mtpLayers)
            return Reject(path, $"shape {layers} layers × {width} values × {blockSize} positions, expected {_layers} × {_width} × {b}");
        if (BinaryPrimitives.ReadUInt128LittleEndian(s[60..]) != key) return Reject(path, "its key does not match its name");
        long mainFloats = (long)layers * b * width, mtpFloats = (long)mtpLayers * b * width;
        if (s.Length != HeaderBytes + b * sizeof(int) + (mainFloats + mtpFloats) * sizeof(float) + 32) return Reject(path, "wrong length");
        int at = HeaderBytes;
        if (!MemoryMarshal.Cast<byte, int>(s.Slice(at, b * sizeof(int))).SequenceEqual(tokens)) return Reject(path, "other tokens under the same key");
        at += b * sizeof(int);
        float[] main = MemoryMarshal.Cast<byte, float>(s.Slice(at, (int)(mainFloats * sizeof(float)))).ToArray();
        at += (int)(mainFloats * sizeof(float));
        float[]? mtp = mtpLayers == 0 ? null : MemoryMarshal.Cast<byte, float>(s.Slice(at, (int)(mtpFloats * sizeof(float)))).ToArray();
        return new Block(key, tokens.ToArray(), main) { Mtp = mtp };
    }

    private Block? Reject(string path, string why)
    {
        _diskErrors++;
        _log($"prefix cache: ignored {path}: {why}; deleted");
        try { File.Delete(path); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }
}
