using System.Text.Json;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using DanceMoE.Operations;

namespace DanceMoE.IntegrationTests.Operations;

public sealed class ModelEvaluationTests : IDisposable
{
    private readonly string _export = Path.Combine(Path.GetTempPath(), "dancemoe-eval-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Held_out_bits_per_byte_through_the_runtime_equal_the_training_programs_on_the_first_512_bytes()
    {
        var checkpoint = Path.Combine(ComposeFileTests.RepositoryRoot(), "onnx", "default");
        var manifest = OnnxExporter.Export(Checkpoint.Open(checkpoint), _export, TensorDtype.F32);
        using var evaluation = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(checkpoint, "evaluation.json")));
        var expected = evaluation.RootElement.GetProperty("slice_bits_per_byte");

        var result = await ModelEvaluation.RunAsync(manifest, 512, new InferenceOptions { Provider = ExecutionProvider.Cpu }, _ => { }, CancellationToken.None);

        Assert.Equal(["de", "en", "fr", "python"], result.Domains.Select(d => d.Domain));
        foreach (var domain in result.Domains)
        {
            Assert.Equal(512, domain.Bytes);
            Assert.Equal(expected.GetProperty(domain.Domain).GetDouble(), domain.BitsPerByte, 4);
        }

        Assert.Equal(result.Domains.Average(d => d.BitsPerByte), result.BitsPerByte, 9);
    }

    [Fact]
    public async Task A_model_without_held_out_samples_is_a_clear_error()
    {
        var tiny = Path.Combine(_export, "tiny");
        TinyCheckpoint.Write(tiny, new TinyOptions { Seed = 3 });
        var manifest = OnnxExporter.Export(Checkpoint.Open(tiny), Path.Combine(_export, "tiny-onnx"), TensorDtype.F32);

        var error = await Assert.ThrowsAsync<OperationException>(() =>
            ModelEvaluation.RunAsync(manifest, 512, new InferenceOptions { Provider = ExecutionProvider.Cpu }, _ => { }, CancellationToken.None));

        Assert.Contains("no heldout/ folder of held-out samples", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Verify_refuses_more_decode_steps_than_the_context_holds_before_it_runs()
    {
        var tiny = Path.Combine(_export, "tiny");
        TinyCheckpoint.Write(tiny, new TinyOptions { Seed = 3 });
        var onnx = Path.Combine(_export, "tiny-onnx");
        var manifest = OnnxExporter.Export(Checkpoint.Open(tiny), onnx, TensorDtype.F32);
        var positions = manifest.Architecture.MaxPositions;
        var cpu = new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };

        var error = await Assert.ThrowsAsync<InvalidSettingsException>(() =>
            ExportVerification.RunAsync(manifest, onnx, tiny, "edge", positions - 4, null, cpu, _ => { }, CancellationToken.None));

        Assert.Equal($"prompt (5 tokens) + --decode-steps ({positions - 4}) exceeds the model's {positions} positions", error.Message);
        var fits = await ExportVerification.RunAsync(manifest, onnx, tiny, "edge", 2, null, cpu, _ => { }, CancellationToken.None);
        Assert.True(fits.Ok);
    }

    public void Dispose()
    {
        if (Directory.Exists(_export))
        {
            Directory.Delete(_export, recursive: true);
        }
    }
}
