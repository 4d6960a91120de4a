import type { Command } from "commander";
import { callControl, type OriginMoved } from "../../daemon/index.js";
import { migrationPaths } from "../../migration/index.js";
import { printJson } from "../table.js";
import { originStateText } from "./origin-state.js";

export function registerOrigin(program: Command): void {
  program
    .command("origin")
    .description(
      "point a live migration at the origin's new address (same host key, or one accepted with --accept-host-key); waiting reads go on there, and a restarted daemon uses it",
    )
    .argument("<id>", "migration id")
    .argument("<url>", "the origin's new address: ssh://user@host[:port] (same user)")
    .option("--accept-host-key <fingerprint>", "trust this host key there (SHA256:...)")
    .option("--json", "print the result as JSON")
    .action(async (id: string, url: string, o: { acceptHostKey?: string; json?: boolean }) => {
      const r = (await callControl(
        migrationPaths(id).socket,
        { op: "origin", url, ...(o.acceptHostKey ? { acceptHostKey: o.acceptHostKey } : {}) },
        120_000,
      )) as OriginMoved;
      if (o.json) {
        printJson({ id, ...r });
        return;
      }
      const state = r.link ? originStateText("connected", r.link) : "not needed (released)";
      process.stdout.write(`migration ${id}: origin is now ${r.origin} (${state})\n`);
    });
}
