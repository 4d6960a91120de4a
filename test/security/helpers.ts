/** Shared by the security and leftovers tests: a temp dir, an SSH identity, the CLI. */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const CLI = resolve(import.meta.dirname, "../../src/cli/main.js");

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `lazyfs-${tag}-`));
}

/** A fresh ed25519 key pair in `dir` (OpenSSH format); `passphrase` encrypts it. */
export function makeKey(dir: string, name = "id", passphrase = ""): string {
  const path = join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-f", path, "-C", "test"]);
  return path;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI with `env` added (e.g. LAZYFS_STATE_DIR); `user` runs it as that user through
 * setpriv (its own groups cleared). Never a shell: arguments reach it as they are.
 */
export function cli(
  args: string[],
  opts: { env?: Record<string, string>; user?: string; timeoutMs?: number; cwd?: string } = {},
): Promise<CliResult> {
  const argv = opts.user
    ? [
        "setpriv",
        `--reuid=${opts.user}`,
        `--regid=${opts.user === "nobody" ? "nogroup" : opts.user}`,
        "--clear-groups",
        process.execPath,
        CLI,
        ...args,
      ]
    : [process.execPath, CLI, ...args];
  return new Promise((done) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      {
        cwd: opts.cwd ?? "/",
        env: { ...process.env, LAZYFS_LOG: "error", ...opts.env },
        timeout: opts.timeoutMs ?? 60_000,
      },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown }) | null;
        done({ code: e ? (typeof e.code === "number" ? e.code : -1) : 0, stdout, stderr });
      },
    );
  });
}

/** The SSH options of the CLI for the test server on `port`. */
export function sshArgs(port: number, key: string, knownHosts: string): string[] {
  return [
    "--origin",
    `ssh://root@127.0.0.1:${port}`,
    "-i",
    key,
    "--known-hosts",
    knownHosts,
    "--accept-new-host-key",
  ];
}

const DUMPED = `
import os, sys, time
d = sys.argv[1]
f = open(os.path.join(d, "data.txt"), "rb")
f.read(2)
open(os.path.join(d, "ready"), "w").close()
while True: time.sleep(1)
`;

/**
 * A real CRIU dump of a small process that holds `<dir>/data.txt` open, in `<dir>/images`
 * (the process ends with the dump).
 */
export async function makeDump(dir: string): Promise<string> {
  const { writeFileSync, mkdirSync } = await import("node:fs");
  const { criuDump } = await import("../../src/criu/index.js");
  const { startWorkload, waitForFile } = await import("../support/workload.js");
  writeFileSync(join(dir, "data.txt"), "the data of a dumped process\n");
  const images = join(dir, "images");
  mkdirSync(images);
  const w = startWorkload({ argv: ["python3", "-c", DUMPED, dir] });
  try {
    await waitForFile(join(dir, "ready"));
    await criuDump({ pid: w.pid, imagesDir: images });
  } finally {
    await w.stop();
  }
  return images;
}
