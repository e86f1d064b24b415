using DanceMoE.Hosting;

namespace DanceMoE.IntegrationTests;

public sealed class RabbitMqUriTests
{
    [Fact]
    public void A_cluster_uri_names_every_node_and_the_first_is_the_host()
    {
        var broker = RabbitMqOptions.Parse("amqp://edge:p%40ss@10.0.0.1:5682,10.0.0.2:5683,10.0.0.3/site");

        Assert.Equal(("10.0.0.1", (ushort)5682, "site", "edge", "p@ss"), (broker.Host, broker.Port, broker.VirtualHost, broker.Username, broker.Password));
        Assert.Equal([new("10.0.0.1", 5682), new("10.0.0.2", 5683), new RabbitMqNode("10.0.0.3", 5672)], broker.Nodes);
        var again = RabbitMqOptions.Parse(broker.UriFor("site"));
        Assert.Equal(broker with { Nodes = [] }, again with { Nodes = [] });
        Assert.Equal(broker.Nodes, again.Nodes);
    }

    [Fact]
    public void A_single_node_uri_has_one_node()
    {
        var broker = RabbitMqOptions.Parse("amqp://127.0.0.1:5682/dancemoe");

        Assert.Equal([new RabbitMqNode("127.0.0.1", 5682)], broker.Nodes);
        Assert.Equal(("guest", "guest"), (broker.Username, broker.Password));
    }

    [Fact]
    public void A_bad_node_in_a_cluster_uri_is_refused_naming_the_whole_uri_but_not_its_password()
    {
        var error = Assert.Throws<FormatException>(() => RabbitMqOptions.Parse("amqp://u:secret@h1:5672,:x/v"));

        Assert.StartsWith("'amqp://u:***@h1:5672,:x/v' is not an amqp://", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://u:secret@localhost/v", "'http://u:***@localhost/v' is not")]
    [InlineData("amqp://u:sec@ret@[::1", "'amqp://u:***@[::1' is not")]
    [InlineData("nonsense", "'nonsense' is not")]
    public void A_uri_that_is_no_broker_is_refused_without_its_password(string uri, string start)
    {
        var error = Assert.Throws<FormatException>(() => RabbitMqOptions.Parse(uri));

        Assert.StartsWith(start, error.Message, StringComparison.Ordinal);
    }
}
