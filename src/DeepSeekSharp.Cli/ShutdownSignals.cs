using System.Runtime.InteropServices;

namespace DeepSeekSharp.Cli;

/// <summary>SIGINT and SIGTERM as a cancellation: the first one cancels <see cref="Token"/> (the command stops
/// cleanly), a second one ends the process at once with the signal's default action.
/// A shell starts a script's background jobs with SIGINT ignored, and .NET keeps an ignored SIGINT ignored for the
/// life of the process once it first sets up signal handling (any use of Console does), so <c>dss serve &amp;</c>
/// would only stop for SIGKILL. <see cref="UnignoreSigInt"/>, called first thing in Main for the commands that
/// stop cleanly, resets an ignored SIGINT to the default (libc <c>sigaction</c>/<c>signal</c>: the OS, not a
/// library we ship), so <c>kill -INT</c> works however the process was started.</summary>
internal sealed class ShutdownSignals : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly List<PosixSignalRegistration> _registrations = [];
    private int _received;

    private ShutdownSignals()
    {
        foreach (PosixSignal s in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
            _registrations.Add(PosixSignalRegistration.Create(s, OnSignal));
    }

    /// <summary>Starts listening; dispose to stop.</summary>
    public static ShutdownSignals Listen() => new();

    public CancellationToken Token => _cts.Token;

    /// <summary>The first signal received, if any.</summary>
    public PosixSignal? Signal { get; private set; }

    private void OnSignal(PosixSignalContext ctx)
    {
        if (Interlocked.Increment(ref _received) > 1) return; // not cancelled: the default action ends the process now
        ctx.Cancel = true;
        Signal = ctx.Signal;
        ThreadPool.QueueUserWorkItem(_ => _cts.Cancel());
    }

    public void Dispose()
    {
        foreach (PosixSignalRegistration r in _registrations) r.Dispose();
        _cts.Dispose();
    }

    private const int SigInt = 2;
    private static readonly IntPtr SigDfl = 0, SigIgn = 1;

    /// <summary>Commands that end cleanly on SIGINT (they create a <see cref="ShutdownSignals"/>).</summary>
    public static readonly string[] Commands = ["serve", "convert"];

    /// <summary>Resets an ignored SIGINT to the default, for <see cref="Commands"/> only; must run before anything
    /// touches Console. Only SIG_IGN is reset; struct sigaction starts with the handler on Linux and macOS, and the
    /// buffer is larger than the struct on either.</summary>
    public static unsafe void UnignoreSigInt(string[] args)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD())) return;
        if (args.Length == 0 || !Commands.Contains(args[0])) return;
        try
        {
            byte* old = stackalloc byte[512];
            if (SigAction(SigInt, null, old) == 0 && *(IntPtr*)old == SigIgn) _ = SetSignal(SigInt, SigDfl);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    [DllImport("libc", EntryPoint = "sigaction")]
    private static extern unsafe int SigAction(int signal, byte* action, byte* oldAction);

    [DllImport("libc", EntryPoint = "signal")]
    private static extern IntPtr SetSignal(int signal, IntPtr handler);
}
