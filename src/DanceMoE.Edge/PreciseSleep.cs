using System.Runtime.InteropServices;

namespace DanceMoE.Edge;

/// <summary>Sleeps for less than a millisecond, which <c>Thread.Sleep</c> rounds down to nothing.</summary>
internal static class PreciseSleep
{
    private static volatile bool s_usleepMissing = !(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS());

    public static void For(TimeSpan duration)
    {
        if (duration <= TimeSpan.Zero)
        {
            return;
        }

        if (!s_usleepMissing)
        {
            try
            {
                _ = USleep((uint)Math.Ceiling(Math.Min(duration.TotalMicroseconds, 999_999)));
                return;
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                s_usleepMissing = true;
            }
        }

        // Without usleep a fraction waits a whole millisecond: late, never early.
        Thread.Sleep(Math.Max(1, (int)Math.Ceiling(duration.TotalMilliseconds)));
    }

    [DllImport("libc", EntryPoint = "usleep")]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int USleep(uint microseconds);
}
