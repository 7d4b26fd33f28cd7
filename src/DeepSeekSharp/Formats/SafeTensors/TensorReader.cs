using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Formats.SafeTensors;

/// <summary>Reads named tensors of a safetensors checkpoint with their shape checked: weight matrices in the format
/// asked for (used in place from the mapped file where it is the stored one, else converted row by row), vectors as
/// float32, FP8 block weights dequantised on the way where needed (<c>W[r, c] = fp8(q[r, c]) · scale_inv[r / br, c / bc]</c>).</summary>
public sealed class TensorReader(SafeTensorsCheckpoint checkpoint, (int Rows, int Cols) fp8Block) : ITensorSource
{
    public WeightFormat StoredFormat(string name) => FormatOf(name) ?? WeightFormat.F32;

    private readonly Dictionary<string, int> _dtypes = new(StringComparer.Ordinal);

    /// <summary>Storage dtypes of the tensors read so far, with counts.</summary>
    public IReadOnlyDictionary<string, int> DTypesRead => _dtypes;

    public bool Contains(string name) => checkpoint.Contains(name);

    /// <summary>The stored dtype of a tensor; null when absent.</summary>
    public WeightFormat? FormatOf(string name) => checkpoint.TryGet(name)?.Info.Format;

    /// <summary>Reads a tensor of exactly <paramref name="shape"/> into <paramref name="destination"/>.</summary>
    /// <param name="why">where the expected shape comes from, for the error message</param>
    public void Read(string name, ReadOnlySpan<long> shape, Span<float> destination, string why)
    {
        var (file, info) = checkpoint.TryGet(name)
            ?? throw new InvalidDataException($"{checkpoint.Describe()}: tensor '{name}' is missing; expected shape {TensorInfo.FormatShape(shape.ToArray())} ({why})");
        if (!info.Shape.AsSpan().SequenceEqual(shape))
            throw new InvalidDataException($"{file.FileName}: tensor '{name}' has shape {TensorInfo.FormatShape(info.Shape)}; expected {TensorInfo.FormatShape(shape.ToArray())} ({why})");
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"destination holds {destination.Length} values; '{name}' has {info.ElementCount}", nameof(destination));
        string key = info.Format.SafeTensorsName();
        _dtypes[key] = _dtypes.GetValueOrDefault(key) + 1;
        if (info.Format == WeightFormat.FP8)
        {
            ReadFp8(file, info, destination);
            return;
        }
        // Convert in row-sized pieces so tensors over 2 GB never need one span.
        long rowElems = shape.Length >= 2 ? info.ElementCount / shape[0] : info.ElementCount;
        int rows = rowElems == 0 ? 0 : (int)(info.ElementCount / rowElems);
        int size = info.Format.ElementBytes();
        for (int r = 0; r < rows; r++)
            NumberFormats.ToFloat(info.Format, file.GetBytes(info, r * rowElems * size, (int)(rowElems * size)),
                destination.Slice((int)(r * rowElems), (int)rowElems));
    }

    private void ReadFp8(SafeTensorsFile file, TensorInfo info, Span<float> destination)
    {
        float[] scale = Fp8Scales(info, out int scaleCols);
        int rows = (int)info.Shape[0], cols = (int)info.Shape[1];
        for (int r = 0; r < rows; r++) Fp8Row(file.GetBytes(info, (long)r * cols, cols), scale, scaleCols, r, destination.Slice(r * cols, cols));
    }

    /// <summary>The block scales of an FP8 weight, checked against its shape.</summary>
    private float[] Fp8Scales(TensorInfo info, out int scaleCols)
    {
        if (info.Shape.Length != 2)
            throw new InvalidDataException($"tensor '{info.Name}' is F8_E4M3 with shape {TensorInfo.FormatShape(info.Shape)}; FP8 block weights must be 2-D");
        int rows = (int)info.Shape[0], cols = (int)info.Shape[1];
        var (br, bc) = fp8Block;
        string scaleName = TensorNames.Hf.ScaleInv(info.Name);
        long[] scaleShape = [(rows + br - 1) / br, (cols + bc - 1) / bc];
        var (scaleFile, scaleInfo) = checkpoint.TryGet(scaleName)
            ?? throw new InvalidDataException($"{checkpoint.Describe()}: tensor '{scaleName}' is missing; F8_E4M3 weight '{info.Name}' needs its block scales, shape {TensorInfo.FormatShape(scaleShape)}");
        if (!scaleInfo.Shape.AsSpan().SequenceEqual(scaleShape))
            throw new InvalidDataException($"{scaleFile.FileName}: tensor '{scaleName}' has shape {TensorInfo.FormatShape(scaleInfo.Shape)}; expected {TensorInfo.FormatShape(scaleShape)} (ceil({rows}/{br}) x ceil({cols}/{bc}) blocks of '{info.Name}')");
        if (scaleInfo.Format == WeightFormat.FP8)
            throw new InvalidDataException($"{scaleFile.FileName}: tensor '{scaleName}' is F8_E4M3; block scales must be F32, BF16 or F16");
        var scale = new float[scaleShape[0] * scaleShape[1]];
        NumberFormats.ToFloat(scaleInfo.Format, scaleFile.GetBytes(scaleInfo), scale);
        scaleCols = (int)scaleShape[1];
        return scale;
    }

    private void Fp8Row(ReadOnlySpan<byte> codes, float[] scale, int scaleCols, int r, Span<float> dst) =>
        NumberFormats.Fp8Row(codes, scale.AsSpan(r / fp8Block.Rows * scaleCols, scaleCols), fp8Block.Cols, dst);

    /// <summary>Reads a [rows, cols] weight into a matrix of <paramref name="format"/>, row by row (no whole-tensor
    /// float copy). With <paramref name="inPlace"/>, a tensor stored as F32, BF16, F16 or FP8 in that format is used
    /// from the memory-mapped file directly; the caller keeps the checkpoint open while the matrix lives.</summary>
    public Matrix ReadMatrix(string name, int rows, int cols, string why, WeightFormat format = WeightFormat.F32, bool inPlace = false)
    {
        long[] shape = [rows, cols];
        var (file, info) = checkpoint.TryGet(name)
            ?? throw new InvalidDataException($"{checkpoint.Describe()}: tensor '{name}' is missing; expected shape {TensorInfo.FormatShape(shape)} ({why})");
        if (!info.Shape.AsSpan().SequenceEqual(shape))
            throw new InvalidDataException($"{file.FileName}: tensor '{name}' has shape {TensorInfo.FormatShape(info.Shape)}; expected {TensorInfo.FormatShape(shape)} ({why})");
        string key = info.Format.SafeTensorsName();
        _dtypes[key] = _dtypes.GetValueOrDefault(key) + 1;
        if (inPlace && (info.Format, format) is (WeightFormat.BF16, WeightFormat.BF16) or (WeightFormat.F32, WeightFormat.F32) or (WeightFormat.F16, WeightFormat.F16))
            unsafe { return Matrix.Wrap(format, rows, cols, file.DataPointer(info), owner: null); }
        if (format == WeightFormat.FP8)
        {
            if (info.Format != WeightFormat.FP8) throw new ArgumentException($"tensor '{name}' is {info.Format}; only F8_E4M3 tensors load as FP8", nameof(format));
            float[] scales = Fp8Scales(info, out _);
            unsafe
            {
                if (inPlace) return Matrix.CreateFp8(rows, cols, file.DataPointer(info), scales, fp8Block, owner: null);
                if (PanelMatrix<Fp8Codes>.Suits(rows, cols, fp8Block)) // wide rows: in panels
                    return PanelMatrix<Fp8Codes>.Read(WeightFormat.FP8, rows, cols, scales, fp8Block, (r0, dst) => file.ReadBytes(info, (long)r0 * cols, dst));
                var codes = new NativeBuffer((long)rows * cols, weights: true);
                RowTasks.Run(rows, (r0, r1) => file.ReadBytes(info, (long)r0 * cols, codes.Bytes((long)r0 * cols, (r1 - r0) * cols)));
                return Matrix.CreateFp8(rows, cols, codes.Pointer, scales, fp8Block, codes);
            }
        }
        int size = info.Format.ElementBytes();
        Matrix m = Matrix.Create(format, rows, cols);
        if (info.Format == format && format is WeightFormat.BF16 or WeightFormat.F32 or WeightFormat.F16)
        {
            // Stored as it is kept: the bytes go straight into the matrix, rows in parallel (no float round trip).
            RowTasks.Run(rows, (r0, r1) => m.ReadStoredRows(r0, r1 - r0, span => file.ReadBytes(info, (long)r0 * cols * size, span)));
            return m;
        }
        float[]? scale = null;
        int scaleCols = 0;
        if (info.Format == WeightFormat.FP8) scale = Fp8Scales(info, out scaleCols);
        RowTasks.Convert(m, (long)cols * size, (r0, raw) => file.ReadBytes(info, (long)r0 * cols * size, raw), (raw, r, row) =>
        {
            if (scale is not null) Fp8Row(raw, scale, scaleCols, r, row);
            else NumberFormats.ToFloat(info.Format, raw, row);
        });
        return m;
    }

    public float[] ReadVector(string name, int length, string why)
    {
        var v = new float[length];
        Read(name, [length], v, why);
        return v;
    }
}
