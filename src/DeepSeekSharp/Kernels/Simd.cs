using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels;

/// <summary>One vector width of float32 lanes, as TensorPrimitives' operator structs give one: the float kernels
/// (<see cref="Dot"/>, <see cref="Quant.WidenedDot{TC}"/>, <see cref="FastExp"/>, <see cref="Softmax"/>, <see cref="SwiGlu"/>)
/// are written once over <typeparamref name="TV"/> and instantiated per width (<see cref="Simd512"/>,
/// <see cref="Simd256"/>, <see cref="Simd128"/>), so every width runs the same operations in the same order. Each member is one instruction
/// or a fixed short sequence, inlined into the kernel.</summary>
internal interface ISimd<TV> where TV : struct
{
    /// <summary>Lanes.</summary>
    static abstract int Count { get; }
    static abstract TV Zero { get; }
    static abstract TV One { get; }
    static abstract TV Broadcast(float x);
    static abstract TV Load(ref float r, nuint i);
    static abstract void Store(TV v, ref float r, nuint i);
    /// <summary>bfloat16 codes widened to float32 (the code shifted into the high half).</summary>
    static abstract TV LoadBf16(ref ushort r, nuint i);
    /// <summary>FP8 E4M3 codes widened to float32 by bit shifts: the E4M3 value times 2⁻¹²⁰ exactly
    /// (<see cref="Quant.Fp8Codes"/>; the NaN codes come out as numbers).</summary>
    static abstract TV LoadFp8(ref byte r, nuint i);
    /// <summary>F16 codes (element i on, two bytes each) widened to float32 by bit shifts: the value times 2⁻¹¹²
    /// exactly (<see cref="Quant.F16Codes"/>; infinities and NaN come out as numbers).</summary>
    static abstract TV LoadF16(ref byte r, nuint i);
    static abstract TV Add(TV a, TV b);
    static abstract TV Subtract(TV a, TV b);
    static abstract TV Multiply(TV a, TV b);
    static abstract TV Divide(TV a, TV b);
    static abstract TV Negate(TV a);
    /// <summary>a · b + c, rounded once.</summary>
    static abstract TV Fma(TV a, TV b, TV c);
    static abstract TV Min(TV a, TV b);
    static abstract TV Max(TV a, TV b);
    /// <summary>Round to nearest, ties to even.</summary>
    static abstract TV Round(TV a);
    /// <summary>y · 2^⌊n/2⌋ · 2^(n − ⌊n/2⌋) for integral n (lanes of <paramref name="n"/> hold whole numbers).</summary>
    static abstract TV ScaleByPowerOfTwo(TV y, TV n);
    /// <summary><paramref name="value"/> where <paramref name="x"/> is a number, x itself where it is NaN.</summary>
    static abstract TV KeepNaN(TV x, TV value);
    /// <summary>The lanes' sum as the runtime's <c>Vector.Sum</c> computes it.</summary>
    static abstract float Sum(TV v);
    static abstract float Lane(TV v, int i);
}

internal readonly struct Simd512 : ISimd<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    public static Vector512<float> One => Vector512<float>.One;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Broadcast(float x) => Vector512.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(ref float r, nuint i) => Vector512.LoadUnsafe(ref r, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector512<float> v, ref float r, nuint i) => v.StoreUnsafe(ref r, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadBf16(ref ushort r, nuint i) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.LoadUnsafe(ref r, i)), 16).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadFp8(ref byte r, nuint i) =>
        (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector128.LoadUnsafe(ref r, i).AsSByte()), 20)
         & Vector512.Create(unchecked((int)0x87F00000))).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadF16(ref byte r, nuint i) =>
        (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.LoadUnsafe(ref Unsafe.Add(ref r, 2 * i)).AsInt16()), 13)
         & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Subtract(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Divide(Vector512<float> a, Vector512<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Negate(Vector512<float> a) => -a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Min(Vector512<float> a, Vector512<float> b) => Vector512.Min(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Round(Vector512<float> a) => Vector512.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ScaleByPowerOfTwo(Vector512<float> y, Vector512<float> n)
    {
        Vector512<int> ni = Vector512.ConvertToInt32(n), n1 = Vector512.ShiftRightArithmetic(ni, 1);
        return y * Vector512.ShiftLeft(n1 + Vector512.Create(127), 23).AsSingle() * Vector512.ShiftLeft(ni - n1 + Vector512.Create(127), 23).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> KeepNaN(Vector512<float> x, Vector512<float> value) => Vector512.ConditionalSelect(Vector512.Equals(x, x), value, x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> v) => Vector512.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Lane(Vector512<float> v, int i) => v.GetElement(i);
}

internal readonly struct Simd256 : ISimd<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    public static Vector256<float> One => Vector256<float>.One;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Broadcast(float x) => Vector256.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(ref float r, nuint i) => Vector256.LoadUnsafe(ref r, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector256<float> v, ref float r, nuint i) => v.StoreUnsafe(ref r, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadBf16(ref ushort r, nuint i) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref r, i)), 16).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadFp8(ref byte r, nuint i) =>
        (Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<long>(ref Unsafe.Add(ref r, i))).AsSByte()), 20)
         & Vector256.Create(unchecked((int)0x87F00000))).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadF16(ref byte r, nuint i) =>
        (Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref Unsafe.Add(ref r, 2 * i)).AsInt16()), 13)
         & Vector256.Create(unchecked((int)0x8FFFE000))).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Subtract(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Divide(Vector256<float> a, Vector256<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Negate(Vector256<float> a) => -a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Min(Vector256<float> a, Vector256<float> b) => Vector256.Min(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Round(Vector256<float> a) => Vector256.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ScaleByPowerOfTwo(Vector256<float> y, Vector256<float> n)
    {
        Vector256<int> ni = Vector256.ConvertToInt32(n), n1 = Vector256.ShiftRightArithmetic(ni, 1);
        return y * Vector256.ShiftLeft(n1 + Vector256.Create(127), 23).AsSingle() * Vector256.ShiftLeft(ni - n1 + Vector256.Create(127), 23).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> KeepNaN(Vector256<float> x, Vector256<float> value) => Vector256.ConditionalSelect(Vector256.Equals(x, x), value, x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> v) => Vector256.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Lane(Vector256<float> v, int i) => v.GetElement(i);
}

/// <summary>128-bit lanes through the portable <see cref="Vector128"/> operations: ARM64's AdvSimd (Apple silicon,
/// Graviton, Windows on ARM), where the 256- and 512-bit paths do not exist. The kernels take it only where the
/// multiply-add is one instruction (<see cref="IsFast"/>: AdvSimd's <c>fmla</c>, or x86 FMA); elsewhere
/// <c>Vector128.FusedMultiplyAdd</c> is emulated lane by lane, correct but slower than the scalar loops, so
/// only the tests call it there (x86 with AVX2 switched off runs the same operations, bit for bit).</summary>
internal readonly struct Simd128 : ISimd<Vector128<float>>
{
    /// <summary>Whether the kernels dispatch to this width: 128-bit vectors with a fused multiply-add in hardware.</summary>
    public static bool IsFast => Vector128.IsHardwareAccelerated && (AdvSimd.IsSupported || System.Runtime.Intrinsics.X86.Fma.IsSupported);

    public static int Count => Vector128<float>.Count;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    public static Vector128<float> One => Vector128<float>.One;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Broadcast(float x) => Vector128.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(ref float r, nuint i) => Vector128.LoadUnsafe(ref r, i);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector128<float> v, ref float r, nuint i) => v.StoreUnsafe(ref r, i);
    /// <summary>Four codes' eight bytes at element i of a two-byte array, in the low half of a vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<short> Low4(ref byte r, nuint i) => Vector128.CreateScalar(Unsafe.ReadUnaligned<long>(ref Unsafe.Add(ref r, 2 * i))).AsInt16();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadBf16(ref ushort r, nuint i) =>
        Vector128.ShiftLeft(Vector128.WidenLower(Low4(ref Unsafe.As<ushort, byte>(ref r), i).AsUInt16()), 16).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadFp8(ref byte r, nuint i) =>
        (Vector128.ShiftLeft(Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(Unsafe.ReadUnaligned<int>(ref Unsafe.Add(ref r, i))).AsSByte())), 20)
         & Vector128.Create(unchecked((int)0x87F00000))).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadF16(ref byte r, nuint i) =>
        (Vector128.ShiftLeft(Vector128.WidenLower(Low4(ref r, i)), 13) & Vector128.Create(unchecked((int)0x8FFFE000))).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Subtract(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Divide(Vector128<float> a, Vector128<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Negate(Vector128<float> a) => -a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Fma(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Min(Vector128<float> a, Vector128<float> b) => Vector128.Min(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Round(Vector128<float> a) => Vector128.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ScaleByPowerOfTwo(Vector128<float> y, Vector128<float> n)
    {
        Vector128<int> ni = Vector128.ConvertToInt32(n), n1 = Vector128.ShiftRightArithmetic(ni, 1);
        return y * Vector128.ShiftLeft(n1 + Vector128.Create(127), 23).AsSingle() * Vector128.ShiftLeft(ni - n1 + Vector128.Create(127), 23).AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> KeepNaN(Vector128<float> x, Vector128<float> value) => Vector128.ConditionalSelect(Vector128.Equals(x, x), value, x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector128<float> v) => Vector128.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Lane(Vector128<float> v, int i) => v.GetElement(i);
}
