/**
 * CLI start-up benchmark: how long a `lazyfs` command takes from exec to exit, against Node's
 * own start-up (`node -e 0`), so the share LazyFS adds is visible. Commands load only their
 * own modules (src/cli/main.ts); `status` on an idle host must stay under 200 ms.
 * The state root is an empty temporary directory (no migrations), so the figures are the
 * CLI's own cost. Median of ROUNDS each. Prints a table; the last line is JSON (ms).
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { STATE_ENV } from "../src/migration/state.js";

const run = promisify(execFile);
const ROUNDS = Number(process.env.LAZYFS_BENCH_ROUNDS ?? 21);
const CLI_MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)]!);
}

async function timed(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    await run(process.execPath, args, { env });
    runs.push(performance.now() - t0);
  }
  return median(runs);
}

const stateRoot = await mkdtemp(join(tmpdir(), "lazyfs-bench-cli-"));
try {
  const env = { ...process.env, [STATE_ENV]: stateRoot };
  const rows: [string, string, number][] = [
    ["node_start", "node -e 0", await timed(["-e", "0"], env)],
    ["version", "lazyfs --version", await timed([CLI_MAIN, "--version"], env)],
    ["status", "lazyfs status", await timed([CLI_MAIN, "status"], env)],
    ["status_json", "lazyfs status --json", await timed([CLI_MAIN, "status", "--json"], env)],
    ["help", "lazyfs --help (every command loaded)", await timed([CLI_MAIN, "--help"], env)],
  ];
  const w = Math.max(...rows.map(([, what]) => what.length));
  console.log(`${"COMMAND".padEnd(w)}  MEDIAN (${ROUNDS} runs)  OVER NODE`);
  const node = rows[0]![2];
  for (const [, what, ms] of rows) {
    console.log(`${what.padEnd(w)}  ${`${ms} ms`.padStart(8)}            ${ms - node} ms`);
  }
  console.log(JSON.stringify(Object.fromEntries(rows.map(([key, , ms]) => [`${key}_ms`, ms]))));
} finally {
  await rm(stateRoot, { recursive: true, force: true });
}
