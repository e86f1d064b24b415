using DanceMoE.Edge;

namespace DanceMoE.EndToEndTests;

public sealed class ComputeClassProbeTests
{
    [Fact]
    public void The_cpu_model_is_the_first_model_name_of_cpuinfo()
    {
        const string cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n\nprocessor\t: 1\nmodel name\t: other\n";

        Assert.Equal("Intel(R) Xeon(R) Platinum 8480+", ComputeClassProbe.CpuModel(cpuinfo));
        Assert.Null(ComputeClassProbe.CpuModel("processor\t: 0\nmodel name\t:\n"));
        Assert.Null(ComputeClassProbe.CpuModel(null));
    }

    [Fact]
    public void The_gpu_model_is_the_first_model_of_the_drivers_information_files()
    {
        const string information = "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 146\nGPU UUID: \t GPU-0\nBus Location: \t 0000:19:00.0\n";

        Assert.Equal("NVIDIA H100 80GB HBM3", ComputeClassProbe.GpuModel(["IRQ: 1\n", information]));
        Assert.Null(ComputeClassProbe.GpuModel([]));
    }

    [Fact]
    public void A_description_is_one_line_of_at_most_128_characters()
    {
        Assert.Equal("a b c", ComputeClassProbe.Clean("a\tb\n\n c "));
        Assert.Equal(new string('x', 128), ComputeClassProbe.Clean(new string('x', 300)));
        Assert.Matches(@"^cpu: \S.* x 3$", ComputeClassProbe.Describe("cpu", 3));
    }
}
