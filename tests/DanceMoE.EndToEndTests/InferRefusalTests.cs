namespace DanceMoE.EndToEndTests;

/// <summary><c>dancemoe infer</c> against a real edge: what the edge refuses reaches the user as one usage line, exit code 2.</summary>
public sealed class InferRefusalTests(SingleEdgeFixture fixture) : IClassFixture<SingleEdgeFixture>
{
    [Fact]
    public async Task Infer_asking_more_tokens_than_the_edge_generates_is_a_usage_line_naming_the_edges_limit()
    {
        await AssertUsageLineAsync(
            "dancemoe infer: edge-1 generates at most 512 tokens per request; asked 1000 (see dancemoe infer --help)",
            "--prompt", "hello", "--max-tokens", "1000");
    }

    [Fact]
    public async Task Infer_refuses_more_tokens_than_any_edge_may_be_configured_to_generate()
    {
        await AssertUsageLineAsync(
            "dancemoe infer: --max-tokens must be between 1 and 16384 (got '16385') (see dancemoe infer --help)",
            "--prompt", "hello", "--max-tokens", "16385");
    }

    [Theory]
    [InlineData("legal\nforged log line", "000A")]
    [InlineData("\u001b[2Jcleared", "001B")]
    [InlineData("line\u2028separator", "2028")]
    public async Task Infer_refuses_a_workload_with_a_control_character_or_line_break_in_one_line(string workload, string code)
    {
        await AssertUsageLineAsync(
            $"dancemoe infer: --workload contains U+{code}, a control character or line break (see dancemoe infer --help)",
            "--prompt", "hello", "--max-tokens", "2", "--workload", workload);
    }

    [Fact]
    public async Task A_request_id_reused_for_another_prompt_is_a_usage_line_and_a_retry_of_the_same_request_is_served()
    {
        var id = Guid.NewGuid().ToString();
        string[] first = ["infer", "--edge", "edge-1", "--prompt", "the first request", "--max-tokens", "2", "--request-id", id];

        var served = await CommandLineTests.RunAsync(first, fixture.Cluster.CliEnvironment());
        await AssertUsageLineAsync(
            $"dancemoe infer: request id {id} was already used on edge-1 for another prompt or other settings; a new request needs a new id (a retry must repeat its request exactly) (see dancemoe infer --help)",
            "--prompt", "another request", "--max-tokens", "2", "--request-id", id);
        var retried = await CommandLineTests.RunAsync(first, fixture.Cluster.CliEnvironment());

        Assert.True(served.ExitCode == 0, $"exit {served.ExitCode}: {served.Errors}");
        Assert.True(retried.ExitCode == 0, $"exit {retried.ExitCode}: {retried.Errors}");
        Assert.Equal(served.Output, retried.Output);
    }

    private async Task AssertUsageLineAsync(string expected, params string[] arguments)
    {
        var (exitCode, output, errors) = await CommandLineTests.RunAsync(["infer", "--edge", "edge-1", .. arguments], fixture.Cluster.CliEnvironment());

        Assert.True(exitCode == 2, $"exit {exitCode}: {errors}");
        Assert.Empty(output);
        Assert.Equal(expected, Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }
}
