using DanceMoE.Contracts;
using DanceMoE.Edge;

namespace DanceMoE.EndToEndTests;

public sealed class RequestIdClaimsTests
{
    [Fact]
    public void A_retry_matches_its_claim_whether_its_prompt_is_text_or_token_ids_and_any_other_setting_is_another_request()
    {
        var claims = new RequestIdClaims("edge-1");
        var id = Guid.NewGuid();
        var request = new GenerateText { RequestId = id, Prompt = "abc", MaxNewTokens = 4, WorkloadTag = "law" };

        claims.Claim(id, [97, 98, 99], request);
        claims.Claim(id, [97, 98, 99], request with { Prompt = null, PromptTokenIds = [97, 98, 99] });

        foreach (var other in new[]
        {
            request with { MaxNewTokens = 5 }, request with { Temperature = 0.5 }, request with { TopP = 0.9 },
            request with { Seed = 1 }, request with { WorkloadTag = "med" }, request with { WorkloadTag = null }, request with { ReplayRequest = 1 },
        })
        {
            var refusal = Assert.Throws<InvalidRequestException>(() => claims.Claim(id, [97, 98, 99], other));
            Assert.StartsWith($"request id {id} was already used on edge-1 for another prompt or other settings", refusal.Message, StringComparison.Ordinal);
        }

        Assert.Throws<InvalidRequestException>(() => claims.Claim(id, [97, 98, 100], request));
    }

    [Fact]
    public void Only_the_newest_ids_up_to_the_capacity_are_remembered()
    {
        var claims = new RequestIdClaims("edge-1", capacity: 2);
        Guid[] ids = [Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid()];
        var request = new GenerateText { Prompt = "a" };
        foreach (var id in ids)
        {
            claims.Claim(id, [1], request);
        }

        claims.Claim(ids[0], [2], request);
        Assert.Throws<InvalidRequestException>(() => claims.Claim(ids[2], [2], request));
    }
}
