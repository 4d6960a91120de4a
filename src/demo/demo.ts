/**
 * `lazyfs demo`: the whole product on two simulated hosts of this machine. Host A runs the
 * paper's read example (a process reading a file line by line and writing what it read);
 * `lazyfs migrate`, run on host B, moves it there; the demo shows the timeline, the traffic
 * on the link, and the process continuing on B exactly where it stopped; then tears down.
 */
import { fileURLToPath } from "node:url";
import { UserError } from "../common/errors.js";
import type { DaemonStatus } from "../daemon/index.js";
import { cleanupStaleHosts, createHostPair, DATA_DIR } from "../hosts/index.js";
import type { MigrateResult } from "../migrate/index.js";

const CLI_MAIN = fileURLToPath(new URL("../cli/main.js", import.meta.url));

/** Writes numbered lines "line N: ..." up to `bytes`. */
const MAKE_INPUT = `
import sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    n, written = 0, 0
    while written < size:
        line = "line %08d: %s\\n" % (n, "lazy file follows its process " * 2)
        f.write(line); written += len(line); n += 1
`;

/** The paper's read example: reads its input line by line, echoes each line, slowly. */
export const LINE_READER = `
import sys, time
delay = float(sys.argv[2])
with open(sys.argv[1]) as f:
    for line in f:
        sys.stdout.write(line); sys.stdout.flush()
        time.sleep(delay)
`;

export interface DemoOptions {
  dataBytes: number;
  rateBitsPerSec: number | null;
  /** How long to watch the process on B after the migration. */
  watchMs: number;
  print: (line: string) => void;
}

export interface DemoResult {
  timeline: MigrateResult["timeline"];
  linesBefore: number;
  linesAfter: number;
  continuous: boolean;
  linkBytes: { aToB: number; bToA: number };
  status: DaemonStatus;
}

function lineNumbers(text: string): number[] {
  return [...text.matchAll(/^line (\d{8}):/gm)].map((m) => Number(m[1]));
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const say = opts.print;
  await cleanupStaleHosts();
  const pair = await createHostPair({ rateBitsPerSec: opts.rateBitsPerSec });
  try {
    const { a, b } = pair;
    say(
      `host A (origin) ${a.address}, host B (target) ${b.address}; link ${opts.rateBitsPerSec ? `${opts.rateBitsPerSec / 1e6} Mbit/s` : "unshaped"}`,
    );
    const sshd = await pair.startOriginSshd();
    say(
      `host A runs sshd on ${sshd.host}:${sshd.port}; ${DATA_DIR} on A is A's own, B cannot see it`,
    );
    const input = `${DATA_DIR}/input.txt`;
    const output = `${DATA_DIR}/output.txt`;
    await a.exec("python3", ["-c", MAKE_INPUT, input, String(opts.dataBytes)]);
    const wl = await a.startWorkload("python3", ["-u", "-c", LINE_READER, input, "0.01"], {
      stdout: output,
    });
    say(
      `host A: pid ${wl.pid} reads ${input} (${opts.dataBytes} bytes) line by line into ${output}`,
    );
    let before = "";
    for (let i = 0; i < 200 && lineNumbers(before).length < 30; i++) {
      await new Promise((r) => setTimeout(r, 50));
      before = await a.readFile(output);
    }
    const c0 = await pair.link.counters();
    say(`migrating pid ${wl.pid} from A to B (lazyfs migrate, run on B) ...`);
    const run = await b.exec(process.execPath, [
      CLI_MAIN,
      "migrate",
      "--from",
      `ssh://root@${a.address}`,
      "--pid",
      String(wl.pid),
      "-i",
      sshd.identityFile,
      "--known-hosts",
      sshd.knownHostsFile,
      "--json",
    ]);
    const result = JSON.parse(run.stdout) as {
      id: string;
      pid: number;
      mountpoint: string;
      timeline: MigrateResult["timeline"];
    };
    const t = result.timeline;
    say(
      `freeze ${t.freezeMs} ms = dump ${t.dumpMs} ms + image transfer ${t.transferMs} ms (${t.imageBytes} bytes) + restore ${t.restoreMs} ms`,
    );
    say(
      `first origin fetch: ${t.firstFetchMs === null ? "none yet" : `${t.firstFetchMs} ms after restore`}`,
    );
    await new Promise((r) => setTimeout(r, opts.watchMs));
    const status = JSON.parse(
      (await b.exec(process.execPath, [CLI_MAIN, "status", result.id, "--json"])).stdout,
    )[0] as DaemonStatus;
    const c1 = await pair.link.counters();
    const onB = `${result.mountpoint}${output}`;
    const after = await b.readFile(onB);
    const nums = lineNumbers(after);
    const continuous = nums.every((n, i) => n === i);
    const linesBefore = lineNumbers(before).length;
    say(
      `host B: pid ${result.pid} goes on writing; ${onB} now has ${nums.length} lines (${linesBefore} when the demo looked before the migration), numbered 0..${nums.length - 1} with ${continuous ? "no gap and no repeat" : "A GAP OR REPEAT"}`,
    );
    say(`last line on B: ${after.trimEnd().split("\n").pop()}`);
    const linkBytes = { aToB: c1.aToB - c0.aToB, bToA: c1.bToA - c0.bToA };
    say(
      `link traffic during migration and ${opts.watchMs} ms of running: A->B ${linkBytes.aToB} bytes, B->A ${linkBytes.bToA} bytes (the input file is ${opts.dataBytes} bytes)`,
    );
    say(
      `origin: ${status.originState}; ${status.total.bytesLocal} of ${status.total.size} bytes local, ${status.total.bytesOnOrigin} only on the origin`,
    );
    if (!continuous)
      throw new UserError("demo: the migrated process's output has a gap or a repeat");
    await b.kill(result.pid, "SIGKILL");
    await b.exec(process.execPath, [CLI_MAIN, "unmount", result.id, "--force", "--purge"], {
      allowFailure: true,
    });
    return { timeline: t, linesBefore, linesAfter: nums.length, continuous, linkBytes, status };
  } finally {
    await pair.destroy();
  }
}
