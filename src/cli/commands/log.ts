import { stat } from "node:fs/promises";
import type { Command } from "commander";
import { accessLogOf, followAccessLog, type LogFilter, readAccessLog } from "../../daemon/index.js";
import type { AccessRecord } from "../../lazy/index.js";
import { parsePid } from "../options.js";
import { formatTable, printable, printJson } from "../table.js";
import { formatBytes, formatMs } from "../units.js";

interface LogOpts {
  path?: string;
  op?: string;
  pid?: string;
  json?: boolean;
  follow?: boolean;
}

function range(r: AccessRecord): string {
  if (r.offset === undefined) return "";
  const end = r.offset + (r.length ?? 0);
  return `${r.offset}-${end} (${formatBytes(r.length ?? 0)})`;
}

function rows(records: AccessRecord[]): string[][] {
  return records.map((r) => [
    new Date(r.t).toISOString(),
    String(r.pid),
    r.op,
    range(r),
    r.source ?? "",
    r.error ?? "",
    `${r.count ?? 1}${(r.lastT ?? r.t) > r.t ? ` in ${formatMs((r.lastT ?? r.t) - r.t)}` : ""}`,
    printable(r.path),
  ]);
}

const HEADER = ["TIME", "PID", "OP", "RANGE", "SOURCE", "ERROR", "REQUESTS", "PATH"];

function filterOf(o: LogOpts): LogFilter {
  const f: LogFilter = {};
  if (o.path !== undefined) f.path = o.path;
  if (o.op !== undefined) f.op = o.op;
  if (o.pid !== undefined) {
    // 0: requests the kernel makes on no process's behalf.
    f.pid = parsePid(o.pid, "--pid", 0);
  }
  return f;
}

export function registerLog(program: Command): void {
  program
    .command("log")
    .description(
      "show a migration's access log (--access-log): which files its process touched, which ranges, when, and where the bytes came from",
    )
    .argument("<id>", "migration id")
    .option("--path <glob>", "only paths matching this glob (as in --policy)")
    .option("--op <op>", "only this operation (read, write, open, lookup, ...)")
    .option("--pid <pid>", "only requests of this process")
    .option("--json", "print the records as JSON (JSON lines with --follow)")
    .option("--follow", "keep printing records as they are written, until Ctrl-C")
    .action(async (id: string, o: LogOpts) => {
      const file = await accessLogOf(id);
      const filter = filterOf(o);
      const records = await readAccessLog(file, filter);
      if (o.json && !o.follow) printJson(records);
      else if (o.json) for (const r of records) process.stdout.write(`${JSON.stringify(r)}\n`);
      else if (records.length > 0 || o.follow) {
        process.stdout.write(`${formatTable(HEADER, rows(records))}\n`);
      } else process.stdout.write(`no records in ${file}\n`);
      if (!o.follow) return;
      const size = await stat(file).then(
        (s) => s.size,
        () => 0,
      );
      const stop = new AbortController();
      process.once("SIGINT", () => stop.abort());
      await followAccessLog(
        file,
        size,
        filter,
        (recs) => {
          for (const r of recs) {
            process.stdout.write(
              o.json ? `${JSON.stringify(r)}\n` : `${rows([r])[0]!.join("  ")}\n`,
            );
          }
        },
        stop.signal,
      );
    });
}
