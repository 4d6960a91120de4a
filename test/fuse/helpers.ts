/** Test helpers: temp mount points and clients in other processes (python3, coreutils). */
import { execFile, type spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { FileSystem, Mount, MountOptions } from "../../src/fuse/index.js";
import { mount, mountInfo } from "../../src/fuse/index.js";

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command in another process (never blocks this process's event loop). */
export function run(cmd: string, args: string[], input?: string): Promise<Ran> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { maxBuffer: 64 << 20, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/** Runs a python3 script; extra args are sys.argv[1:]. */
export function py(script: string, ...args: string[]): Promise<Ran> {
  return run("python3", ["-c", script, ...args]);
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** A temp dir removed (after unmounting anything mounted under it) by `cleanup`. */
export class Scratch {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "fuse-test-"));
  private readonly mounts: Mount[] = [];
  private readonly children: ReturnType<typeof spawn>[] = [];

  sub(name: string): string {
    const p = path.join(this.dir, name);
    fs.mkdirSync(p, { recursive: true });
    return p;
  }

  async mount(name: string, fsys: FileSystem, opts: MountOptions = {}): Promise<Mount> {
    const m = await mount(this.sub(name), fsys, { subtype: "test", ...opts });
    this.mounts.push(m);
    return m;
  }

  track(child: ReturnType<typeof spawn>): void {
    this.children.push(child);
  }

  async cleanup(): Promise<void> {
    for (const c of this.children)
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const m of this.mounts) await m.unmount().catch(() => {});
    for (const e of fs.readdirSync(this.dir)) {
      const p = path.join(this.dir, e);
      if (mountInfo(p)) await run("umount", ["-l", p]);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
