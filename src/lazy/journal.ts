/**
 * The durable form of the tree, in the cache directory: `tree.json` (a snapshot) and
 * `tree.log` (one JSON record a line, appended before a request is answered). Reopening
 * replays the log over the snapshot and compacts both into a new snapshot. A torn last line
 * (the daemon died while writing it) is ignored: its request was never answered.
 *
 * Records: `{"n": NodeRecord}` (a node's attributes), `{"x": ino}` (node gone),
 * `{"e": [dirIno, name, ino]}` (a name; ino 0 = known absent), `{"p": key}` (a manifest entry
 * applied once, never again: a planned file removed by the process stays removed).
 *
 * The cache's disk may be full. Opening then keeps the log as it is (no compaction, a torn
 * last line cut off), and a record that cannot be appended is held in memory, in order, and
 * written as soon as there is room: the request is answered, as a
 * page cache would, and `sync` (the process's fsync) fails with ENOSPC while anything is held.
 */
import {
  closeSync,
  constants,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { errnoCode, errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { createExclusiveSync, openPrivateSync, unlinkStaleSync } from "../common/private-files.js";
import type { NodeRecord } from "./nodes.js";

const log = logger("lazy");

/** Told when a write to the cache failed (for lack of space?) and when one succeeded. */
export interface SpaceWatch {
  writeFailed(err: unknown): void;
  wrote(): void;
}

/** Records held for want of space are retried this often. */
const RETRY_MS = 1000;

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
  /** Records not in the log yet (no room), oldest first. */
  private held: string[] = [];
  private retry?: NodeJS.Timeout;
  /** Records have been held since the last time all were written. */
  private holding = false;

  private constructor(
    private readonly dir: string,
    private readonly space?: SpaceWatch,
  ) {
    this.fd = openPrivateSync(join(dir, "tree.log"), constants.O_APPEND);
  }

  /** Opens the journal of `dir` (creating it) and returns the state it holds. */
  static open(
    dir: string,
    initialIno: number,
    space?: SpaceWatch,
  ): { journal: Journal; state: TreeState } {
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
    const text = readText(join(dir, "tree.log")) ?? "";
    // Only lines ended by a newline count: one write each, so anything else is torn.
    let whole = 0;
    for (let at = 0, nl = text.indexOf("\n"); nl >= 0; at = nl + 1, nl = text.indexOf("\n", at)) {
      const line = text.slice(at, nl);
      if (line) {
        let r: Record;
        try {
          r = JSON.parse(line) as Record;
        } catch {
          break; // torn
        }
        apply(state, r);
      }
      whole += Buffer.byteLength(line) + 1;
    }
    const journal = new Journal(dir, space);
    if (!journal.tryCompact(state)) {
      // Kept as it is (no room for a snapshot): records follow its last whole line.
      const size = fstatSync(journal.fd).size;
      if (whole < size) ftruncateSync(journal.fd, whole);
    }
    return { journal, state };
  }

  private append(r: Record) {
    this.held.push(`${JSON.stringify(r)}\n`);
    this.lines++;
    this.writeHeld();
  }

  /** Writes the held records in order; false if some are still held (no room yet). */
  private writeHeld(): boolean {
    while (this.held.length > 0) {
      const line = Buffer.from(this.held[0]!);
      const at = fstatSync(this.fd).size;
      let failure: unknown;
      try {
        if (writeSync(this.fd, line) === line.length) {
          this.held.shift();
          if (this.held.length === 0 && this.holding) {
            this.holding = false;
            this.space?.wrote();
          }
          continue;
        }
        failure = Object.assign(new Error("short write to the journal"), { code: "ENOSPC" });
      } catch (err) {
        failure = err;
      }
      // A torn line would hide every later record from replay: cut it off again.
      try {
        ftruncateSync(this.fd, at);
      } catch {
        // replay stops at a torn line; nothing is appended after it before this succeeds
      }
      this.space?.writeFailed(failure);
      if (!this.holding) {
        this.holding = true;
        log.warn("cannot write the tree journal; holding its records until there is room", {
          dir: this.dir,
          error: errorMessage(failure),
        });
      }
      this.retry ??= setTimeout(() => {
        this.retry = undefined;
        this.writeHeld();
      }, RETRY_MS);
      this.retry.unref();
      return false;
    }
    return true;
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

  /**
   * Writes `state` as the snapshot and empties the log (and what is held); false, leaving
   * the log as it was, when the snapshot cannot be written (the disk is full).
   */
  tryCompact(state: TreeState): boolean {
    try {
      this.compact(state);
      return true;
    } catch (err) {
      unlinkStaleSync(join(this.dir, "tree.json.tmp"));
      this.space?.writeFailed(err);
      // Not at every record from now on: after as many again.
      this.lines = Math.floor(COMPACT_AFTER / 2);
      log.warn("cannot write a snapshot of the tree journal; the log is kept", {
        dir: this.dir,
        error: errorMessage(err),
      });
      return false;
    }
  }

  /** Writes `state` as the snapshot and empties the log (crash-safe in that order). */
  private compact(state: TreeState) {
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
    try {
      const bytes = Buffer.from(snap);
      if (writeSync(fd, bytes) !== bytes.length) {
        throw Object.assign(new Error("short write of the tree snapshot"), { code: "ENOSPC" });
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(this.dir, "tree.json"));
    closeSync(this.fd);
    this.fd = openPrivateSync(join(this.dir, "tree.log"), constants.O_APPEND);
    ftruncateSync(this.fd, 0);
    fsyncSync(this.fd);
    this.lines = 0;
    this.held = [];
    this.holding = false;
    clearTimeout(this.retry);
    this.retry = undefined;
  }

  /** Makes every record so far durable (fsync of a file or directory asks for it). */
  sync() {
    if (!this.writeHeld()) {
      throw Object.assign(new Error("tree journal: records held, no space to write them"), {
        code: "ENOSPC",
      });
    }
    fdatasyncSync(this.fd);
  }

  close() {
    clearTimeout(this.retry);
    this.writeHeld();
    closeSync(this.fd);
  }
}
