# The coordinator host's image. The coordinator reads only the model's shape, from an exported model: the default
# checkpoint is exported once here, at build, with the CLI.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/DanceMoE.Coordinator.Host/DanceMoE.Coordinator.Host.csproj -c Release -o /app \
    && dotnet publish src/DanceMoE.Cli/DanceMoE.Cli.csproj -c Release -o /cli \
    && dotnet /cli/dancemoe.dll model export onnx/default --out /models/default

FROM mcr.microsoft.com/dotnet/runtime:10.0
WORKDIR /app
COPY --from=build /app .
COPY --from=build /models/default /app/models/default
ENTRYPOINT ["dotnet", "/app/DanceMoE.Coordinator.Host.dll"]
