/**
 * Running a command to completion and collecting its output, with one clear error when it
 * fails. Used for `ip`, `tc`, `nsenter`, `unshare`, `criu` and friends.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { UserError } from "../common/errors.js";

export interface RunOptions {
  /** Bytes written to the command's standard input (default: none, stdin is /dev/null). */
  input?: string | Buffer;
  /** Resolve with the non-zero code instead of throwing. */
  allowFailure?: boolean;
  /** Kill the command (SIGKILL) and fail after this long; default 60 s; 0 or Infinity: never. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Shown in error messages, e.g. the host name. */
  label?: string;
  /** The command as shown in error messages (default argv). */
  display?: readonly string[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** Exit code; -1 if the command was killed by a signal. */
  code: number;
}

/** A command that exited non-zero (or by a signal, or timed out). */
export class CommandError extends Error {
  /** The command as shown (inside a host: without the nsenter prefix). */
  readonly argv: readonly string[];
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  constructor(label: string, argv: readonly string[], result: RunResult, why?: string) {
    const tail = result.stderr.trim().split("\n").slice(-4).join(" | ");
    super(
      `${label}: \`${argv.join(" ")}\` ${why ?? `exited with code ${result.code}`}${tail ? `: ${tail}` : ""}`,
    );
    this.name = "CommandError";
    this.argv = argv;
    this.code = result.code;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
  }
}

const DEFAULT_TIMEOUT_MS = 60_000;

export function runCommand(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const label = opts.label ?? "hosts";
  const shown = opts.display ?? argv;
  const limit = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: opts.env ?? process.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on("data", (c: Buffer) => out.push(c));
    child.stderr!.on("data", (c: Buffer) => err.push(c));
    let timedOut = false;
    const timer =
      limit > 0 && Number.isFinite(limit)
        ? setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
          }, limit)
        : undefined;
    child.once("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        e.code === "ENOENT"
          ? new UserError(
              `${label}: \`${argv[0]}\` is not installed (needed to run ${argv.join(" ")})`,
            )
          : e,
      );
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        code: code ?? -1,
      };
      if (timedOut) {
        reject(new CommandError(label, shown, result, `timed out after ${limit} ms`));
      } else if (result.code !== 0 && !opts.allowFailure) {
        reject(
          new CommandError(label, shown, result, signal ? `was killed by ${signal}` : undefined),
        );
      } else {
        resolve(result);
      }
    });
    if (opts.input !== undefined) {
      child.stdin!.on("error", () => {}); // the command may exit without reading everything
      child.stdin!.end(opts.input);
    }
  });
}

/** Output and exit of a spawned child, collected as it runs. */
export interface Watched {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Exit code, -1 when killed by a signal or when it could not start. */
  readonly exit: Promise<number>;
}

export function watch(child: ChildProcess): Watched {
  let out = "";
  let err = "";
  child.stdout?.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on("data", (c: Buffer) => {
    err += c.toString();
  });
  const exit = new Promise<number>((resolve) => {
    child.once("close", (code) => resolve(code ?? -1));
    child.once("error", (e) => {
      err += e.message;
      resolve(-1);
    });
  });
  return { child, stdout: () => out, stderr: () => err, exit };
}

/**
 * Resolves once the child printed `marker` on stdout; rejects with its stderr if it exits
 * first or if `timeoutMs` passes (the child is then killed).
 */
export function waitForMarker(
  w: Watched,
  marker: string,
  label: string,
  timeoutMs = 30_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      w.child.stdout?.off("data", check);
      if (err) reject(err);
      else resolve();
    };
    // Registered after watch()'s own listener, so w.stdout() already holds the new chunk.
    function check() {
      if (w.stdout().includes(marker)) finish();
    }
    const timer = setTimeout(() => {
      w.child.kill("SIGKILL");
      finish(new Error(`${label}: not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    w.child.stdout?.on("data", check);
    void w.exit.then((code) => {
      check();
      const tail = w.stderr().trim().split("\n").slice(-4).join(" | ");
      finish(
        new Error(`${label}: exited with code ${code} before ready${tail ? `: ${tail}` : ""}`),
      );
    });
    check();
  });
}
