import type { Command } from "commander";
import { runDemo } from "../../demo/demo.js";
import { parseRate } from "../../migration/index.js";
import { printJson } from "../table.js";

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description(
      "migrate a running process between two simulated hosts on this machine (network + mount namespaces), then tear down",
    )
    .option("--size <bytes>", "size of the file the process reads", "67108864")
    .option("--link <rate>", "shape the link between the hosts, e.g. 100mbit (default: unshaped)")
    .option("--watch <ms>", "how long to watch the process on the target", "3000")
    .option("--json", "print the figures as JSON at the end")
    .action(async (o: { size: string; link?: string; watch: string; json?: boolean }) => {
      const result = await runDemo({
        dataBytes: Math.max(4096, Number(o.size) || 67108864),
        rateBitsPerSec: o.link ? parseRate(o.link) * 8 : null,
        watchMs: Math.max(500, Number(o.watch) || 3000),
        print: (line) => process.stdout.write(`${line}\n`),
      });
      if (o.json) printJson(result);
    });
}
