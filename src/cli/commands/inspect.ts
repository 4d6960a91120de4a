/**
 * `lazyfs inspect <images-dir> [--json]`: what a CRIU dump references.
 *
 * Table output: one block per task (pid, comm, ppid, exe, cwd, root), then its fds and its
 * file-backed mappings as aligned tables, then every distinct referenced file. Paths are shown
 * on one line with control characters escaped (`\n`, `\xNN`) and backslashes doubled.
 *
 * JSON output (`--json`) is the DumpModel of src/criu/model.ts:
 *   {
 *     "dir": string,                 images directory as given
 *     "criuVersion"?: string,        from a CRIU log in the directory, if any
 *     "imgVersion": number,          inventory img_version
 *     "tasks": [{
 *       "pid", "ppid", "pgid", "sid": number, "threads": number[], "comm": string,
 *       "exe"?, "cwd"?, "root"?: string,
 *       "fds": [{ "fd": number, "kind": "reg"|"pipe"|"fifo"|"unixsk"|"tty"|..., "fileId": number,
 *                 "path"?: string, "flags": number (open flags), "flagsText": "O_RDONLY|...",
 *                 "fdFlags": number (FD_CLOEXEC), "pos"?: number, "size"?: number (bytes;
 *                 CRIU omits it for O_WRONLY|O_APPEND files), "mode"?: number (st_mode) }],
 *       "mappings": [{ "path": string, "fileId": number, "start": number, "end": number,
 *                      "pgoff": number (bytes), "prot": number, "protText": "r-x",
 *                      "flags": number (MAP_*), "shared": boolean }]
 *     }],
 *     "files": [{ "path": string, "type": "file"|"dir"|"chr"|"blk"|"fifo"|"sock"|"link"|"unknown",
 *                 "size"?: number, "mode"?: number, "fileIds": number[],
 *                 "usedBy": [{ "pid": number, "use": "fd"|"map"|"exe"|"cwd"|"root",
 *                              "fd"?: number, "start"?: number }] }]
 *   }
 * Paths are the strings CRIU stored (absolute within the task's mount namespace).
 */
import type { Command } from "commander";
import { type DumpModel, loadDump } from "../../criu/index.js";
import { formatTable, printable, printJson } from "../table.js";

const opt = (v: number | undefined, f: (n: number) => string = String) =>
  v === undefined ? "-" : f(v);
const octal = (n: number) => `0${n.toString(8)}`;
const hex = (n: number) => `0x${n.toString(16)}`;

export function renderDump(model: DumpModel): string {
  const out: string[] = [];
  out.push(
    `images ${printable(model.dir)}  img_version ${model.imgVersion}` +
      (model.criuVersion ? `  criu ${model.criuVersion}` : ""),
  );
  for (const t of model.tasks) {
    out.push("");
    out.push(`task ${t.pid} (${printable(t.comm)})  ppid ${t.ppid}  pgid ${t.pgid}  sid ${t.sid}`);
    out.push(`  exe   ${printable(t.exe ?? "-")}`);
    out.push(`  cwd   ${printable(t.cwd ?? "-")}`);
    out.push(`  root  ${printable(t.root ?? "-")}`);
    out.push("");
    out.push(
      formatTable(
        ["FD", "KIND", "FLAGS", "POS", "SIZE", "MODE", "PATH"],
        t.fds.map((f) => [
          String(f.fd),
          f.kind,
          f.flagsText,
          opt(f.pos),
          opt(f.size),
          opt(f.mode, octal),
          printable(f.path ?? "-"),
        ]),
      ),
    );
    if (t.mappings.length > 0) {
      out.push("");
      out.push(
        formatTable(
          ["START", "END", "PGOFF", "PROT", "SHARED", "PATH"],
          t.mappings.map((m) => [
            hex(m.start),
            hex(m.end),
            String(m.pgoff),
            m.protText,
            m.shared ? "yes" : "no",
            printable(m.path),
          ]),
        ),
      );
    }
  }
  out.push("");
  out.push(
    formatTable(
      ["TYPE", "SIZE", "MODE", "USES", "PATH"],
      model.files.map((f) => [
        f.type,
        opt(f.size),
        opt(f.mode, octal),
        String(f.usedBy.length),
        printable(f.path),
      ]),
    ),
  );
  return `${out.join("\n")}\n`;
}

export function registerInspect(program: Command): void {
  program
    .command("inspect")
    .description("show the files, fds and mappings a CRIU dump references")
    .argument("<images-dir>", "CRIU images directory")
    .option("--json", "print the model as JSON")
    .action(async (dir: string, options: { json?: boolean }) => {
      const model = await loadDump(dir);
      if (options.json) printJson(model);
      else process.stdout.write(renderDump(model));
    });
}
