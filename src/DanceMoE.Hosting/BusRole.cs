namespace DanceMoE.Hosting;

/// <summary>
/// Who connects to RabbitMQ, each as a user of its own with only the permissions its role needs (scripts/rabbitmq-users.sh).
/// </summary>
public enum BusRole
{
    /// <summary>Sends text-generation requests to edges and reads its replies (infer, benchmarks' clients).</summary>
    Client,

    /// <summary>An edge server.</summary>
    Edge,

    /// <summary>The coordinator: the only sender of placements and migration commands.</summary>
    Coordinator,

    /// <summary>An operator: the management API (read-only monitoring) and <c>placement run-now</c>.</summary>
    Ops,

    /// <summary>The bootstrap credential (administrator): virtual hosts and users, tests, benchmarks' isolated set-ups.</summary>
    Admin,
}

public static class BusRoles
{
    /// <summary>The RabbitMQ user of <paramref name="role"/> as <c>./dancemoe services up</c> and compose create it.</summary>
    public static string UserOf(BusRole role) => "dancemoe-" + role.ToString().ToLowerInvariant();
}
