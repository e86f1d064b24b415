using DanceMoE.Coordinator;

namespace DanceMoE.IntegrationTests.Operations;

public sealed class ModelShapeTests
{
    [Fact]
    public void The_placement_model_and_the_job_settings_carry_the_same_shape()
    {
        var shape = new ModelShape(Layers: 4, Experts: 16, TopK: 2, ExpertBytes: 393_216, HiddenBytes: 512);

        var model = shape.ToMoeModel();
        var settings = shape.PlacementJobSettings();

        Assert.Equal((4, 16, 2, 512L), (model.Layers, model.Experts, model.TopK, model.HiddenBytes));
        Assert.All(model.ExpertBytes, b => Assert.Equal(393_216, b));
        Assert.Equal(64, shape.RoutedExperts);
        Assert.Equal("4", settings["PlacementJob:Layers"]);
        Assert.Equal("16", settings["PlacementJob:Experts"]);
        Assert.Equal("2", settings["PlacementJob:TopK"]);
        Assert.Equal("393216", settings["PlacementJob:ExpertBytes"]);
        Assert.Equal("512", settings["PlacementJob:HiddenBytes"]);
    }
}
