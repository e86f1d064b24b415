using System.Runtime.InteropServices;

namespace DanceMoE.Edge;

/// <summary>Sleeps for less than a millisecond, which <c>Thread.Sleep</c> rounds down to nothing.</summary>
internal static class PreciseSleep
{
    public static void For(TimeSpan duration)
    {
        if (duration <= TimeSpan.Zero)
        {
            return;
        }

        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            _ = USleep((uint)Math.Ceiling(Math.Min(duration.TotalMicroseconds, 999_999)));
            return;
        }

        Thread.Sleep(duration.TotalMilliseconds < 1 ? 1 : (int)duration.TotalMilliseconds);
    }

    [DllImport("libc", EntryPoint = "usleep")]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int USleep(uint microseconds);
}
