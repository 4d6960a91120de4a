/**
 * The durable form of the tree, in the cache directory: `tree.json` (a snapshot) and
 * `tree.log` (one JSON record a line, appended before a request is answered). Reopening
 * replays the log over the snapshot and compacts both into a new snapshot. A torn last line
 * (the daemon died while writing it) is ignored: its request was never answered.
 *
 * Records: `{"n": NodeRecord}` (a node's attributes), `{"x": ino}` (node gone),
 * `{"e": [dirIno, name, ino]}` (a name; ino 0 = known absent), `{"p": key}` (a manifest entry
 * applied once, never again: a planned file removed by the process stays removed).
 */
import {
  closeSync,
  constants,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { errnoCode } from "../common/errors.js";
import { createExclusiveSync, openPrivateSync, unlinkStaleSync } from "../common/private-files.js";
import type { NodeRecord } from "./nodes.js";

export interface TreeState {
  nextIno: number;
  nodes: Map<number, NodeRecord>;
  entries: Map<number, Map<string, number>>;
  planned: Set<string>;
}

type Record = { n: NodeRecord } | { x: number } | { e: [number, string, number] } | { p: string };

const COMPACT_AFTER = 200_000;

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

function apply(s: TreeState, r: Record) {
  if ("n" in r) {
    s.nodes.set(r.n.ino, r.n);
    s.nextIno = Math.max(s.nextIno, r.n.ino + 1);
  } else if ("x" in r) {
    s.nodes.delete(r.x);
    s.entries.delete(r.x);
  } else if ("e" in r) {
    const [dir, name, ino] = r.e;
    const m = s.entries.get(dir) ?? new Map<string, number>();
    s.entries.set(dir, m);
    m.set(name, ino);
  } else s.planned.add(r.p);
}

export class Journal {
  private fd: number;
  private lines = 0;

  private constructor(private readonly dir: string) {
    this.fd = openPrivateSync(join(dir, "tree.log"), constants.O_APPEND);
  }

  /** Opens the journal of `dir` (creating it) and returns the state it holds. */
  static open(dir: string, initialIno: number): { journal: Journal; state: TreeState } {
    const state: TreeState = {
      nextIno: initialIno,
      nodes: new Map(),
      entries: new Map(),
      planned: new Set(),
    };
    const snap = readText(join(dir, "tree.json"));
    if (snap !== undefined) {
      const j = JSON.parse(snap) as {
        nextIno: number;
        nodes: NodeRecord[];
        entries: [number, string, number][];
        planned: string[];
      };
      state.nextIno = j.nextIno;
      for (const n of j.nodes) apply(state, { n });
      for (const e of j.entries) apply(state, { e });
      for (const p of j.planned) state.planned.add(p);
    }
    const log = readText(join(dir, "tree.log")) ?? "";
    for (const line of log.split("\n")) {
      if (!line) continue;
      let r: Record;
      try {
        r = JSON.parse(line) as Record;
      } catch {
        break; // torn last line
      }
      apply(state, r);
    }
    const journal = new Journal(dir);
    journal.compact(state);
    return { journal, state };
  }

  private append(r: Record) {
    writeSync(this.fd, `${JSON.stringify(r)}\n`);
    this.lines++;
  }

  node(n: NodeRecord) {
    this.append({ n });
  }

  gone(ino: number) {
    this.append({ x: ino });
  }

  entry(dir: number, name: string, ino: number) {
    this.append({ e: [dir, name, ino] });
  }

  planned(key: string) {
    this.append({ p: key });
  }

  /** Whether the log has grown enough to be folded into a snapshot. */
  get wantsCompaction(): boolean {
    return this.lines >= COMPACT_AFTER;
  }

  /** Writes `state` as the snapshot and empties the log (crash-safe in that order). */
  compact(state: TreeState) {
    const entries: [number, string, number][] = [];
    for (const [dir, m] of state.entries)
      for (const [name, ino] of m) entries.push([dir, name, ino]);
    const snap = JSON.stringify({
      nextIno: state.nextIno,
      nodes: [...state.nodes.values()],
      entries,
      planned: [...state.planned],
    });
    const tmp = join(this.dir, "tree.json.tmp");
    unlinkStaleSync(tmp);
    const fd = createExclusiveSync(tmp);
    writeSync(fd, snap);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, join(this.dir, "tree.json"));
    closeSync(this.fd);
    this.fd = openPrivateSync(join(this.dir, "tree.log"), constants.O_APPEND);
    ftruncateSync(this.fd, 0);
    fsyncSync(this.fd);
    this.lines = 0;
  }

  /** Makes every record so far durable (fsync of a file or directory asks for it). */
  sync() {
    fdatasyncSync(this.fd);
  }

  close() {
    closeSync(this.fd);
  }
}
