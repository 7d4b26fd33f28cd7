using System.Diagnostics.CodeAnalysis;

namespace DeepSeekSharp.Kernels;

internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void TooShort(string name, long needed, long found) =>
        throw new ArgumentException($"'{name}' holds {found} elements; the kernel needs {needed}", name);

    [DoesNotReturn]
    public static void LengthMismatch(string name, long expected, long found) =>
        throw new ArgumentException($"'{name}' has length {found}; expected {expected}", name);
}
