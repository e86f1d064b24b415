using Npgsql;
using RabbitMQ.Client.Exceptions;

namespace DanceMoE.Hosting;

/// <summary>
/// Tells a broker or database that answered and refused the login or the database named from one that could not be
/// reached: the first is a setting to fix, not worth retrying, and "is it up?" is the wrong advice for a wrong password.
/// </summary>
public static class ServiceRefusal
{
    /// <summary>
    /// What the server refused and which setting to check (<paramref name="setting"/>, else ConnectionStrings__rabbitmq or
    /// ConnectionStrings__postgres), from the first exception in the chain that says; null when nothing was refused.
    /// </summary>
    public static string? Describe(Exception exception, string? setting = null)
    {
        for (var ex = exception; ex is not null; ex = ex.InnerException)
        {
            var refusal = ex switch
            {
                AuthenticationFailureException => $"the broker refused the login ({ex.Message}); check the user and password in {setting ?? "ConnectionStrings__rabbitmq"}",
                PostgresException { SqlState: PostgresErrorCodes.InvalidPassword or PostgresErrorCodes.InvalidAuthorizationSpecification } =>
                    $"the database server refused the login ({ex.Message}); check the user and password in {setting ?? "ConnectionStrings__postgres"}",
                PostgresException { SqlState: PostgresErrorCodes.InvalidCatalogName } =>
                    $"the database server has no such database ({ex.Message}); check the database in {setting ?? "ConnectionStrings__postgres"}",
                _ => null,
            };
            if (refusal is not null)
            {
                return refusal;
            }
        }

        return null;
    }

    /// <summary>The broker's refusal for the user's permissions (ACCESS_REFUSED), from the first exception in the chain that is one; null otherwise.</summary>
    public static OperationInterruptedException? AccessRefusal(Exception? exception)
    {
        for (; exception is not null; exception = exception.InnerException)
        {
            if (exception is OperationInterruptedException { ShutdownReason.ReplyCode: RabbitMQ.Client.Constants.AccessRefused } refusal)
            {
                return refusal;
            }
        }

        return null;
    }
}
