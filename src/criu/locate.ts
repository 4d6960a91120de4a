/**
 * Finding a usable CRIU (>= 4.2, the first that dumps TCP sockets on Linux >= 6.16): the `--criu` option, else $LAZYFS_CRIU, else the private
 * prefix LazyFS installs (/opt/lazyfs/criu/bin/criu), else `criu` on $PATH. An explicit choice
 * (option or environment) is used alone; when nothing works the error names every candidate
 * tried and why it was rejected.
 */
import { execFile } from "node:child_process";
import { access, constants } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { UserError } from "../common/errors.js";

export const PRIVATE_CRIU = "/opt/lazyfs/criu/bin/criu";
export const CRIU_ENV = "LAZYFS_CRIU";
/** The oldest CRIU LazyFS runs, here and on origins. */
export const MIN_CRIU_VERSION = "4.2";
const MIN_CRIU_WHY = "cannot dump TCP sockets on Linux >= 6.16";

/**
 * Compares two versions as major.minor.patch, numerically ("4.10" > "4.2"; a missing part is
 * 0; an epoch "1:" and a suffix such as "-1" are ignored). Negative, zero or positive.
 */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) =>
    v
      .replace(/^\d+:/, "")
      .split(/[-+~]/)[0]!
      .split(".")
      .map((p) => Number.parseInt(p, 10) || 0);
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length, 3); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Why a CRIU of `version` cannot be used, or undefined when it is recent enough. */
export function criuVersionProblem(version: string): string | undefined {
  return compareVersions(version, MIN_CRIU_VERSION) < 0
    ? `version ${version} is older than ${MIN_CRIU_VERSION} (${MIN_CRIU_WHY})`
    : undefined;
}
const NOT_FOUND = "not found or not executable";

export interface CriuLocation {
  path: string;
  /** As printed by `criu --version`, e.g. "4.2.1". */
  version: string;
  source: "option" | "env" | "prefix" | "path";
}

export interface LocateOptions {
  criuPath?: string;
  env?: NodeJS.ProcessEnv;
}

function criuVersion(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(path, ["--version"], { timeout: 10_000 }, (err, stdout) => {
      if (err) return reject(new Error(`\`--version\` failed: ${err.message.split("\n")[0]}`));
      const m = /Version:\s*(\d+(?:\.\d+)*)/.exec(stdout);
      if (!m) return reject(new Error("`--version` printed no version"));
      resolve(m[1]!);
    });
  });
}

/** Why `path` is not a usable CRIU, or its version. */
async function probe(path: string): Promise<{ version?: string; problem?: string }> {
  try {
    await access(path, constants.X_OK);
  } catch {
    return { problem: NOT_FOUND };
  }
  try {
    const version = await criuVersion(path);
    const problem = criuVersionProblem(version);
    return problem ? { problem } : { version };
  } catch (err) {
    return { problem: (err as Error).message };
  }
}

export async function locateCriu(options: LocateOptions = {}): Promise<CriuLocation> {
  const env = options.env ?? process.env;
  const candidates: { path: string; source: CriuLocation["source"]; label: string }[] = [];
  if (options.criuPath) {
    candidates.push({ path: options.criuPath, source: "option", label: "--criu" });
  } else if (env[CRIU_ENV]) {
    candidates.push({ path: env[CRIU_ENV]!, source: "env", label: `$${CRIU_ENV}` });
  } else {
    candidates.push({ path: PRIVATE_CRIU, source: "prefix", label: "private prefix" });
    for (const dir of (env.PATH ?? "").split(delimiter).filter(Boolean)) {
      candidates.push({ path: join(dir, "criu"), source: "path", label: "PATH" });
    }
  }
  const tried: string[] = [];
  let missingOnPath = 0;
  for (const c of candidates) {
    const { version, problem } = await probe(c.path);
    if (version) return { path: c.path, version, source: c.source };
    if (c.source === "path" && problem === NOT_FOUND) missingOnPath++;
    else tried.push(`${c.path} (${c.label}): ${problem}`);
  }
  if (candidates[0]?.source === "prefix" && (missingOnPath > 0 || !env.PATH)) {
    tried.push(`criu on PATH (${env.PATH ?? "unset"}): ${NOT_FOUND}`);
  }
  throw new UserError(`no usable CRIU >= ${MIN_CRIU_VERSION}; tried ${tried.join("; ")}`);
}
