using System.Diagnostics;

namespace DanceMoE.IntegrationTests;

public sealed class ComposeFileTests
{
    [Fact]
    public async Task The_compose_file_is_valid_for_docker_compose()
    {
        var (exitCode, _, errors) = await DockerComposeAsync("config -q");

        Assert.True(exitCode == 0, $"docker-compose config -q failed: {errors}");
    }

    [Fact]
    public async Task The_compose_file_has_the_broker_the_database_the_migrations_the_edges_and_the_coordinator()
    {
        var (exitCode, output, errors) = await DockerComposeAsync("--profile tools config --services");

        Assert.True(exitCode == 0, errors);
        Assert.Equal(
            ["client", "coordinator", "edge-1", "edge-2", "edge-3", "edge-gpu-1", "grafana", "migrations", "postgres", "prometheus", "rabbitmq"],
            output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order());
    }

    [Fact]
    public async Task Edges_and_coordinator_serve_metrics_and_are_healthy_only_when_ready()
    {
        var services = await ServicesAsync();

        foreach (var name in new[] { "edge-1", "edge-2", "edge-3", "coordinator" })
        {
            var block = services[name];
            Assert.Contains("Metrics__Port: '9464'", block, StringComparison.Ordinal);
            Assert.Contains("Metrics__Host: '*'", block, StringComparison.Ordinal);
            Assert.Contains("healthcheck:", block, StringComparison.Ordinal);
            Assert.Contains("/dev/tcp/127.0.0.1/9464", block, StringComparison.Ordinal);
            Assert.Contains("GET /readyz", block, StringComparison.Ordinal);
        }

        Assert.Contains("Edge__ExpertMetrics: \"true\"", services["edge-1"], StringComparison.Ordinal);
        Assert.Contains("condition: service_healthy", services["client"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Prometheus_scrapes_every_edge_and_the_coordinator_and_grafana_is_provisioned()
    {
        var services = await ServicesAsync();
        var root = RepositoryRoot();
        var prometheus = await File.ReadAllTextAsync(Path.Combine(root, "compose", "prometheus", "prometheus.yml"));

        foreach (var target in new[] { "edge-1:9464", "edge-2:9464", "edge-3:9464", "coordinator:9464" })
        {
            Assert.Contains($"\"{target}\"", prometheus, StringComparison.Ordinal);
        }

        Assert.Contains("prometheus.yml:/etc/prometheus/prometheus.yml:ro", services["prometheus"], StringComparison.Ordinal);
        Assert.Contains("grafana/provisioning:/etc/grafana/provisioning:ro", services["grafana"], StringComparison.Ordinal);
        Assert.Contains("grafana/dashboards:/var/lib/grafana/dashboards:ro", services["grafana"], StringComparison.Ordinal);
        Assert.Contains("GF_SECURITY_ADMIN_PASSWORD__FILE", services["grafana"], StringComparison.Ordinal);
        Assert.DoesNotContain("GF_SECURITY_ADMIN_PASSWORD:", services["grafana"], StringComparison.Ordinal);
        Assert.Contains("url: http://prometheus:9090", await File.ReadAllTextAsync(Path.Combine(root, "compose", "grafana", "provisioning", "datasources", "prometheus.yml")), StringComparison.Ordinal);
        using var dashboard = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(DashboardFile()));
        Assert.True(dashboard.RootElement.GetProperty("panels").GetArrayLength() >= 6);
    }

    [Fact]
    public async Task PostgreSQL_asks_every_connection_for_a_password_read_from_secret_files()
    {
        var services = await ServicesAsync();

        var postgres = services["postgres"];
        Assert.Contains("POSTGRES_PASSWORD_FILE: /run/secrets/postgres_admin_password", postgres, StringComparison.Ordinal);
        Assert.DoesNotContain("POSTGRES_PASSWORD:", postgres, StringComparison.Ordinal);
        Assert.Contains("--auth-local=scram-sha-256 --auth-host=scram-sha-256", postgres, StringComparison.Ordinal);
        Assert.Contains("POSTGRES_HOST_AUTH_METHOD: scram-sha-256", postgres, StringComparison.Ordinal);
        foreach (var name in new[] { "migrations", "coordinator", "edge-1", "client" })
        {
            Assert.Contains("Passfile=/run/secrets/postgres_app_pgpass", services[name], StringComparison.Ordinal);
            Assert.Contains("source: postgres_app_pgpass", services[name], StringComparison.Ordinal);
            Assert.DoesNotContain("Password=", services[name], StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("@postgres:", services[name], StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Compose_has_no_broker_password_of_its_own_and_each_service_connects_as_its_role()
    {
        var (exitCode, output, errors) = await DockerComposeAsync("config", withBrokerPasswords: false);
        Assert.True(exitCode == 0, errors);
        Assert.Contains("RABBITMQ_DEFAULT_PASS: ''", output, StringComparison.Ordinal);
        var broker = new ProcessStartInfo("bash", $"\"{Path.Combine(RepositoryRoot(), "compose", "rabbitmq", "start-with-policies.sh")}\"")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var role in BrokerRoles)
        {
            broker.Environment.Remove($"DANCEMOE_RABBITMQ_{role}_PASSWORD");
        }

        broker.Environment["RABBITMQ_DEFAULT_PASS"] = "";
        using (var refused = Process.Start(broker)!)
        {
            var refusal = await refused.StandardError.ReadToEndAsync();
            await refused.WaitForExitAsync();
            Assert.Equal(1, refused.ExitCode);
            Assert.Contains("DANCEMOE_RABBITMQ_ADMIN_PASSWORD is not set", refusal, StringComparison.Ordinal);
        }

        var services = await ServicesAsync();
        Assert.Contains("RABBITMQ_DEFAULT_USER: dancemoe-admin", services["rabbitmq"], StringComparison.Ordinal);
        Assert.Contains("RABBITMQ_DEFAULT_PASS: secret-of-admin", services["rabbitmq"], StringComparison.Ordinal);
        Assert.Contains("rabbitmq-users.sh:/etc/rabbitmq/rabbitmq-users.sh:ro", services["rabbitmq"], StringComparison.Ordinal);
        foreach (var (service, role) in new[] { ("edge-1", "edge"), ("edge-gpu-1", "edge"), ("coordinator", "coordinator"), ("client", "client") })
        {
            Assert.Contains($"ConnectionStrings__rabbitmq: amqp://dancemoe-{role}:secret-of-{role}@rabbitmq:5672/dancemoe", services[service], StringComparison.Ordinal);
        }

        Assert.Contains("ConnectionStrings__rabbitmq_ops: amqp://dancemoe-ops:secret-of-ops@", services["client"], StringComparison.Ordinal);
        Assert.Contains("Edge__CoordinatorUser: dancemoe-coordinator", services["edge-1"], StringComparison.Ordinal);
        Assert.DoesNotContain("ConnectionStrings__rabbitmq", services["migrations"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_gpu_profile_runs_an_edge_on_cuda_with_a_gpu_reserved_and_only_in_that_profile()
    {
        var services = await ServicesAsync();

        var gpu = services["edge-gpu-1"];
        Assert.Contains("target: edge-gpu", gpu, StringComparison.Ordinal);
        Assert.Contains("- --provider\n    - cuda", gpu.Replace("\r", "", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.Contains("driver: nvidia", gpu, StringComparison.Ordinal);
        Assert.Contains("- gpu", gpu, StringComparison.Ordinal);
        Assert.Contains("profiles:\n    - gpu", gpu, StringComparison.Ordinal);
        foreach (var cpu in new[] { "edge-1", "edge-2", "edge-3" })
        {
            Assert.DoesNotContain("profiles:", services[cpu], StringComparison.Ordinal);
            Assert.Contains("target: edge\n", services[cpu], StringComparison.Ordinal);
        }

        var dockerfile = await File.ReadAllTextAsync(Path.Combine(RepositoryRoot(), "compose", "Dockerfile"));
        Assert.Contains("FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 AS edge-gpu", dockerfile, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Every_published_port_is_on_loopback()
    {
        var services = await ServicesAsync();

        var ports = new List<string>();
        foreach (var block in services.Values)
        {
            var inPorts = false;
            foreach (var line in block.Split('\n'))
            {
                if (line == "    ports:")
                {
                    inPorts = true;
                    continue;
                }

                if (inPorts && line.StartsWith("    - ", StringComparison.Ordinal))
                {
                    ports.Add(line[6..]);
                }
                else
                {
                    inPorts = false;
                }
            }
        }

        Assert.Contains("127.0.0.1:9090:9090/tcp", ports);
        Assert.Contains("127.0.0.1:3000:3000/tcp", ports);
        Assert.All(ports, p => Assert.StartsWith("127.0.0.1:", p, StringComparison.Ordinal));
    }

    /// <summary>The dashboard compose provisions in Grafana (the end-to-end tests check its metric names).</summary>
    public static string DashboardFile() => Path.Combine(RepositoryRoot(), "compose", "grafana", "dashboards", "dancemoe.json");

    /// <summary>Each service of <c>docker-compose config</c> (the tools profile too) with the text of its block.</summary>
    private static async Task<Dictionary<string, string>> ServicesAsync()
    {
        var (exitCode, output, errors) = await DockerComposeAsync("--profile tools config");
        Assert.True(exitCode == 0, errors);
        var services = new Dictionary<string, string>(StringComparer.Ordinal);
        string? current = null;
        var inServices = false;
        foreach (var line in output.Split('\n'))
        {
            if (!line.StartsWith(' '))
            {
                inServices = line == "services:";
                current = null;
                continue;
            }

            if (!inServices)
            {
                continue;
            }

            if (line.Length > 2 && line[2] != ' ' && line.StartsWith("  ", StringComparison.Ordinal) && line.EndsWith(':'))
            {
                current = line.Trim().TrimEnd(':');
                services[current] = "";
            }
            else if (current is not null)
            {
                services[current] += line + "\n";
            }
        }

        return services;
    }

    /// <summary>The roles whose RabbitMQ passwords compose takes from the environment (<c>DANCEMOE_RABBITMQ_ROLE_PASSWORD</c>).</summary>
    private static readonly string[] BrokerRoles = ["ADMIN", "CLIENT", "EDGE", "COORDINATOR", "OPS"];

    private static async Task<(int ExitCode, string Output, string Errors)> DockerComposeAsync(string arguments, bool withBrokerPasswords = true)
    {
        var file = Path.Combine(RepositoryRoot(), "compose", "docker-compose.yml");
        var start = new ProcessStartInfo("docker-compose", $"-f \"{file}\" {arguments}")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var role in BrokerRoles)
        {
            var variable = $"DANCEMOE_RABBITMQ_{role}_PASSWORD";
            if (withBrokerPasswords)
            {
                start.Environment[variable] = $"secret-of-{role.ToLowerInvariant()}";
            }
            else
            {
                start.Environment.Remove(variable);
            }
        }
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException("docker-compose is not installed: apt-get install -y --no-install-recommends docker-compose (./dancemoe test does it)", ex);
        }

        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync();
            var errors = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync();
            return (process.ExitCode, await output, await errors);
        }
    }

    internal static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "DanceMoE.Bus.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("cannot find DanceMoE.Bus.sln above " + AppContext.BaseDirectory);
    }
}
