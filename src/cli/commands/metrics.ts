import type { Command } from "commander";
import { metricsRegistry, sampleMigrations, serveMetrics } from "../../daemon/index.js";

interface MetricsOpts {
  listen?: string;
  timeout: string;
  prometheus?: boolean;
}

export function registerMetrics(program: Command): void {
  program
    .command("metrics")
    .description(
      "metrics of every migration on this host in the OpenMetrics format: printed once, or served over HTTP with --listen",
    )
    .option("--listen <host:port>", "serve GET /metrics there until stopped (e.g. 127.0.0.1:9464)")
    .option(
      "--timeout <ms>",
      "how long each daemon gets to answer before it counts as down",
      "1500",
    )
    .option("--prometheus", "print the Prometheus text format instead of OpenMetrics")
    .action(async (o: MetricsOpts) => {
      const timeoutMs = Math.max(100, Number(o.timeout) || 1500);
      if (!o.listen) {
        const reg = metricsRegistry(await sampleMigrations(timeoutMs), !o.prometheus);
        process.stdout.write(await reg.metrics());
        return;
      }
      const server = await serveMetrics(o.listen, "--listen", () => sampleMigrations(timeoutMs));
      process.stderr.write(`serving metrics on http://${o.listen}/metrics\n`);
      await new Promise<void>((resolve) => {
        for (const sig of ["SIGINT", "SIGTERM"] as const) {
          process.once(sig, () => {
            server.close();
            server.closeAllConnections();
            resolve();
          });
        }
      });
    });
}
