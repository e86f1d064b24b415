namespace DanceMoE.Hosting;

/// <summary>How far ahead of a receiver's clock a message's own date may be: the sender's clock may run ahead a little.</summary>
public static class ClockSkew
{
    /// <summary>Dates decide which placement and which heartbeat win; one dated further ahead would win until then.</summary>
    public static readonly TimeSpan Max = TimeSpan.FromMinutes(1);
}
