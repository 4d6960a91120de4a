/**
 * SSH set-up benchmark: what resolving a destination the way OpenSSH does costs.
 *  1. `ssh -G` of a Host alias (the resolution every connection starts with), vs the
 *     fallback without ssh (OpenSSH's defaults assumed).
 *  2. Connecting to a real sshd on loopback, until the SFTP session answers a stat: directly,
 *     and through a ProxyJump host (a second sshd), compared with OpenSSH's own
 *     `ssh -J jump origin true` and `ssh origin true` on the same config.
 * Median of ROUNDS each. Prints a table; the last line is JSON (all times in ms).
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type SshdHandle, startSshd } from "../src/hosts/sshd.js";
import { SftpOrigin } from "../src/origin/index.js";
import { resolveSshConfig } from "../src/ssh/config.js";

const run = promisify(execFile);
const ROUNDS = Number(process.env.LAZYFS_BENCH_ROUNDS ?? 15);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)]! * 10) / 10;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    await fn();
    runs.push(performance.now() - t0);
  }
  return median(runs);
}

function configText(origin: SshdHandle, jump: SshdHandle): string {
  return [
    "Host bench-jump",
    `  HostName ${jump.host}`,
    `  Port ${jump.port}`,
    "  User root",
    `  IdentityFile ${jump.identityFile}`,
    `  UserKnownHostsFile ${jump.knownHostsFile} ${origin.knownHostsFile}`,
    "  IdentitiesOnly yes",
    "Host bench-origin bench-origin-jumped",
    `  HostName ${origin.host}`,
    `  Port ${origin.port}`,
    "  User root",
    `  IdentityFile ${origin.identityFile}`,
    `  UserKnownHostsFile ${jump.knownHostsFile} ${origin.knownHostsFile}`,
    "  IdentitiesOnly yes",
    "  BatchMode yes",
    "Host bench-origin-jumped",
    "  ProxyJump bench-jump",
    "",
  ].join("\n");
}

async function connectAndStat(dest: string, configFile: string): Promise<void> {
  const o = new SftpOrigin({
    destination: dest,
    host: dest,
    sshConfigFile: configFile,
    agent: undefined,
  });
  await o.stat("/");
  await o.close();
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), "lazyfs-bench-ssh-"));
  const origin = await startSshd();
  const jump = await startSshd();
  try {
    const config = join(dir, "config");
    await writeFile(config, configText(origin, jump));
    const sshG = await timed(() => resolveSshConfig("bench-origin", { configFile: config }));
    const fallback = await timed(() =>
      resolveSshConfig("bench-origin", { configFile: config, sshCommand: join(dir, "no-ssh") }),
    );
    const direct = await timed(() => connectAndStat("bench-origin", config));
    const jumped = await timed(() => connectAndStat("bench-origin-jumped", config));
    const sshDirect = await timed(() => run("ssh", ["-F", config, "bench-origin", "true"]));
    const sshJumped = await timed(() => run("ssh", ["-F", config, "bench-origin-jumped", "true"]));
    const rows = [
      ["ssh -G of a Host alias", sshG],
      ["fallback without ssh (defaults)", fallback],
      ["lazyfs: resolve + connect + SFTP stat, direct", direct],
      ["lazyfs: resolve + connect + SFTP stat, via ProxyJump", jumped],
      ["OpenSSH: ssh alias true, direct", sshDirect],
      ["OpenSSH: ssh alias true, via ProxyJump", sshJumped],
    ] as const;
    const w = Math.max(...rows.map((r) => r[0].length));
    console.log(`${"STEP".padEnd(w)}  MEDIAN (${ROUNDS} runs)`);
    for (const [what, ms] of rows) console.log(`${what.padEnd(w)}  ${ms} ms`);
    console.log(
      JSON.stringify({
        rounds: ROUNDS,
        ssh_g_ms: sshG,
        fallback_ms: fallback,
        connect_direct_ms: direct,
        connect_proxyjump_ms: jumped,
        openssh_direct_ms: sshDirect,
        openssh_proxyjump_ms: sshJumped,
      }),
    );
  } finally {
    await origin.stop();
    await jump.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
