using DanceMoE.Data;
using Microsoft.EntityFrameworkCore.Design;

namespace DanceMoE.Migrations;

/// <summary>Lets <c>dotnet ef migrations add</c> build the model; it never connects.</summary>
public sealed class DesignTimeDbContextFactory : IDesignTimeDbContextFactory<DanceMoEDbContext>
{
    public DanceMoEDbContext CreateDbContext(string[] args) => DanceMoEDbContext.Create(DatabaseOptions.LocalDefault);
}
