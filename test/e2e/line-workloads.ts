/**
 * A reader and a writer whose output proves that a process went on exactly, for the detach
 * and chained-migration tests: the reader writes the sha256 of every input line, in order;
 * the writer appends numbered lines to a file it opened once.
 */
import { createHash } from "node:crypto";
import type { Host, Workload } from "../../src/hosts/index.js";
import { waitFor } from "./helpers.js";

export const sha = (s: string) => createHash("sha256").update(s).digest("hex");

/** Writes sha256 of every line of argv[1] to stdout, one a line, slowly. */
export const HASH_READER = `
import sys, time, hashlib
with open(sys.argv[1], 'rb') as f:
    for line in f:
        sys.stdout.write(hashlib.sha256(line.rstrip(b'\\n')).hexdigest() + '\\n'); sys.stdout.flush()
        time.sleep(float(sys.argv[2]))
`;

/** Appends argv[3] numbered lines to argv[1] (opened once, in append mode), slowly. */
export const APPENDER = `
import sys, time, hashlib
with open(sys.argv[1], 'a') as f:
    for i in range(int(sys.argv[3])):
        f.write('%06d %s\\n' % (i, hashlib.sha256(str(i).encode()).hexdigest()[:16])); f.flush()
        time.sleep(float(sys.argv[2]))
`;

/** The i-th line APPENDER writes. */
export const appended = (i: number) =>
  `${String(i).padStart(6, "0")} ${sha(String(i)).slice(0, 16)}`;

export interface ReaderWriter {
  reader: Workload;
  writer: Workload;
  input: string;
  output: string;
  log: string;
  /** The reader's input lines; its output must be their hashes. */
  inputLines: string[];
  /** The writer's file as it must end: the origin's line and n appended lines. */
  expectedLog: string[];
}

/**
 * Starts both on `host` under `dir`, each in a directory of its own (a lazy directory would
 * otherwise also mirror the other's file, which keeps changing until that one moves too),
 * with n lines at 10 ms each; returns once both show progress.
 */
export async function startReaderAndWriter(
  host: Host,
  dir: string,
  n: number,
): Promise<ReaderWriter> {
  const input = `${dir}/r/input.txt`;
  const output = `${dir}/r/hashes.txt`;
  const log = `${dir}/w/append.log`;
  await host.exec("mkdir", ["-p", `${dir}/r`, `${dir}/w`]);
  const inputLines = Array.from({ length: n }, (_, i) => `input line ${i} ${"x".repeat(i % 70)}`);
  await host.writeFile(input, `${inputLines.join("\n")}\n`);
  await host.writeFile(log, "origin line\n");
  const reader = await host.startWorkload("python3", ["-u", "-c", HASH_READER, input, "0.01"], {
    stdout: output,
    cwd: `${dir}/r`,
  });
  const writer = await host.startWorkload(
    "python3",
    ["-u", "-c", APPENDER, log, "0.01", String(n)],
    {
      stdout: "/dev/null",
      cwd: `${dir}/w`,
    },
  );
  const lines = async (p: string) => (await host.readFile(p).catch(() => "")).split("\n").length;
  await waitFor("both started", async () =>
    (await lines(output)) > 20 && (await lines(log)) > 20 ? true : undefined,
  );
  return {
    reader,
    writer,
    input,
    output,
    log,
    inputLines,
    expectedLog: ["origin line", ...Array.from({ length: n }, (_, i) => appended(i))],
  };
}
