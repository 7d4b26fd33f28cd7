using System.Buffers.Binary;
using System.Text;
using DeepSeekSharp.Formats;

namespace DeepSeekSharp.Training.Data;

/// <summary>A file of training tokens: a 32-byte header, the token ids (uint32 little-endian), then one byte per token
/// saying whether the token is a loss target (1) or context only (0: prompts and system turns of chat data).
/// <code>
/// offset 0  "DSSTOKEN"      magic
///        8  uint32 1        version
///       12  uint32 vocab    ids are below this
///       16  uint64 count    tokens
///       24  uint64 documents
/// </code>
/// Documents are concatenated, each ending with the end-of-sequence token.</summary>
public sealed class TokenShard
{
    public const string Extension = ".tokens";
    private static readonly byte[] Magic = "DSSTOKEN"u8.ToArray();
    private const int HeaderBytes = 32;

    private TokenShard(string path, int vocab, int[] tokens, byte[] mask, long documents)
    {
        Path = path; VocabSize = vocab; Tokens = tokens; LossMask = mask; Documents = documents;
    }

    public string Path { get; }
    public int VocabSize { get; }
    public int[] Tokens { get; }
    /// <summary>1 where the token is predicted with a loss, 0 where it is context only.</summary>
    public byte[] LossMask { get; }
    public long Documents { get; }

    /// <summary>Writes a shard atomically (<see cref="AtomicFile"/>).</summary>
    public static void Write(string path, int vocab, int[] tokens, byte[] mask, long documents)
    {
        if (mask.Length != tokens.Length) throw new ArgumentException($"{mask.Length} mask bytes for {tokens.Length} tokens", nameof(mask));
        AtomicFile.Write(path, f =>
        {
            Span<byte> header = stackalloc byte[HeaderBytes];
            Magic.CopyTo(header);
            BinaryPrimitives.WriteUInt32LittleEndian(header[8..], 1);
            BinaryPrimitives.WriteUInt32LittleEndian(header[12..], (uint)vocab);
            BinaryPrimitives.WriteUInt64LittleEndian(header[16..], (ulong)tokens.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(header[24..], (ulong)documents);
            f.Write(header);
            var buffer = new byte[4096 * 4];
            for (int i = 0; i < tokens.Length; i += 4096)
            {
                int count = Math.Min(4096, tokens.Length - i);
                for (int j = 0; j < count; j++) BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(j * 4), tokens[i + j]);
                f.Write(buffer, 0, count * 4);
            }
            f.Write(mask);
        });
    }

    /// <summary>Reads and checks a shard: magic, version, length, and every id below the vocabulary.</summary>
    public static TokenShard Read(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (FileNotFoundException) { throw new FileNotFoundException($"token shard '{path}' does not exist"); }
        if (bytes.Length < HeaderBytes || !bytes.AsSpan(0, 8).SequenceEqual(Magic))
            throw new InvalidDataException($"{path}: not a token shard (no DSSTOKEN header); make one with dss prepare-data");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
        if (version != 1) throw new InvalidDataException($"{path}: token shard version {version}; this dss reads version 1");
        int vocab = (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(12));
        ulong count = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(16));
        long documents = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(24));
        if (count == 0) throw new InvalidDataException($"{path}: the shard holds no tokens");
        if (count > int.MaxValue || (ulong)bytes.Length != HeaderBytes + count * 5)
            throw new InvalidDataException($"{path}: header says {count} tokens ({HeaderBytes + count * 5} bytes) but the file has {bytes.Length} bytes: truncated or corrupt");
        int n = (int)count;
        var tokens = new int[n];
        for (int i = 0; i < n; i++)
        {
            int id = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(HeaderBytes + i * 4));
            if ((uint)id >= (uint)vocab) throw new InvalidDataException($"{path}: token {i} is {id}, outside the vocabulary of {vocab}: corrupt");
            tokens[i] = id;
        }
        byte[] mask = bytes.AsSpan(HeaderBytes + n * 4, n).ToArray();
        foreach (byte m in mask)
            if (m > 1) throw new InvalidDataException($"{path}: loss mask byte {m} is neither 0 nor 1: corrupt");
        return new TokenShard(path, vocab, tokens, mask, documents);
    }

    public override string ToString() => new StringBuilder().Append(Path).Append(": ").Append(Tokens.Length.ToString("N0"))
        .Append(" tokens, ").Append(Documents.ToString("N0")).Append(" documents").ToString();
}
