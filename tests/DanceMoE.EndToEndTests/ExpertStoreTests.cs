using DanceMoE.Edge;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;

namespace DanceMoE.EndToEndTests;

public sealed class ExpertStoreTests : IDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "dancemoe-store-" + Guid.NewGuid().ToString("N")[..8]);

    [Fact]
    public void A_reservation_holds_room_for_its_expert_until_it_is_loaded_or_given_up()
    {
        TinyCheckpoint.Write(Path.Combine(_directory, "ckpt"), new TinyOptions { Seed = 5 });
        var manifest = OnnxExporter.Export(Checkpoint.Open(Path.Combine(_directory, "ckpt")), Path.Combine(_directory, "onnx"), TensorDtype.F32);
        var expertBytes = manifest.Expert(0, 0).WeightBytes;
        using var store = new ExpertStore(new ExpertSessionPool(manifest, new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu })), 2 * expertBytes);

        var first = store.Reserve(0, 0);
        var second = store.Reserve(0, 1);
        var refused = Assert.Throws<ExpertBudgetException>(() => store.Reserve(0, 2));
        Assert.Throws<ExpertBudgetException>(() => store.Load(0, 2));
        second.Dispose();
        using var third = store.Reserve(0, 2);
        first.Load();
        third.Load();
        first.Dispose();

        Assert.Contains("reservations included", refused.Message, StringComparison.Ordinal);
        Assert.True(store.Holds(0, 0) && store.Holds(0, 2) && !store.Holds(0, 1));
        Assert.Equal(2 * expertBytes, store.UsedBytes);
        Assert.Throws<ExpertBudgetException>(() => store.Reserve(1, 0));
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // Sessions may still hold a file for a moment; the temp folder is cleaned by the OS.
        }
    }
}
