/**
 * The access log: one JSON line per FUSE request that reached LazyFS, for the operator who
 * wants to know which files a process touched, which ranges, when, and where the bytes came
 * from. A record:
 *
 *   {"t":1732945000123,"pid":4242,"op":"read","path":"/srv/data.bin","offset":0,
 *    "length":67108864,"source":"origin","count":512,"lastT":1732945001880}
 *
 * `t` is when the first request of the record arrived (ms since the epoch), `pid` the caller
 * (the FUSE request header's pid; 0 for the kernel's own requests), `source` where the bytes
 * came from (store, origin, scrub, local-copy, local-write), `error` the errno of a failed
 * request. Sequential runs are coalesced into one record: requests of the same pid, op, path
 * and source whose ranges follow each other (or, for ops without a range, that repeat) with
 * less than `windowMs` between them; `count` says how many requests a record stands for and
 * `lastT` when the last one arrived.
 *
 * Writing never blocks the read path: records are queued in memory and appended by one
 * asynchronous writer; past `maxPendingBytes` queued, new records are dropped and counted,
 * and a `{"op":"dropped","count":N}` record says so once the writer caught up.
 */
import { type FileHandle, open } from "node:fs/promises";
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { ByteSource } from "../fetch/index.js";

const log = logger("access-log");

export interface AccessRecord {
  t: number;
  pid: number;
  op: string;
  path: string;
  offset?: number;
  length?: number;
  source?: ByteSource;
  error?: string;
  count?: number;
  lastT?: number;
}

export interface AccessLogOptions {
  /** Requests further apart than this are not coalesced (default 1000 ms). */
  windowMs?: number;
  /** Most bytes of records waiting for the writer before new ones are dropped (default 8 MiB). */
  maxPendingBytes?: number;
}

export interface AccessLogFigures {
  file: string;
  /** Records written (coalesced), requests they stand for, records dropped. */
  records: number;
  requests: number;
  dropped: number;
}

/** An open run of requests that may still grow. */
interface Run {
  rec: AccessRecord;
  /** Where the next contiguous request starts (ranged ops). */
  end: number;
}

const RANGED = new Set(["read", "write", "fallocate"]);

export class AccessLog {
  private fh?: FileHandle;
  private readonly runs = new Map<string, Run>();
  private pending: string[] = [];
  private pendingBytes = 0;
  private writing?: Promise<void>;
  private readonly timer: NodeJS.Timeout;
  private readonly windowMs: number;
  private readonly maxPending: number;
  private closed = false;
  private dropped = 0;
  private droppedUnreported = 0;
  private records = 0;
  private requests = 0;

  private constructor(
    readonly file: string,
    opts: AccessLogOptions,
  ) {
    this.windowMs = opts.windowMs ?? 1000;
    this.maxPending = opts.maxPendingBytes ?? 8 << 20;
    this.timer = setInterval(() => this.flushIdle(Date.now()), this.windowMs);
    this.timer.unref();
  }

  /** Opens (appends to) `file`; a UserError-worthy failure surfaces here, not later. */
  static async open(file: string, opts: AccessLogOptions = {}): Promise<AccessLog> {
    const log = new AccessLog(file, opts);
    log.fh = await open(file, "a", 0o600);
    return log;
  }

  /** One request, at its completion. Cheap: no I/O, at most one string built per record. */
  add(
    t: number,
    pid: number,
    op: string,
    path: string,
    offset: number | undefined,
    length: number | undefined,
    source: ByteSource | undefined,
    error: string | undefined,
  ): void {
    if (this.closed) return;
    this.requests++;
    const key = `${pid}\0${op}\0${path}\0${source ?? ""}\0${error ?? ""}`;
    const run = this.runs.get(key);
    const ranged = RANGED.has(op) && offset !== undefined && length !== undefined;
    if (run) {
      const rec = run.rec;
      const recent = t - (rec.lastT ?? rec.t) <= this.windowMs;
      if (recent && (!ranged || offset === run.end)) {
        rec.count = (rec.count ?? 1) + 1;
        rec.lastT = t;
        if (ranged) {
          rec.length = (rec.length ?? 0) + length;
          run.end += length;
        }
        return;
      }
      this.runs.delete(key);
      this.emit(rec);
    }
    const rec: AccessRecord = { t, pid, op, path };
    if (offset !== undefined) rec.offset = offset;
    if (length !== undefined) rec.length = length;
    if (source !== undefined) rec.source = source;
    if (error !== undefined) rec.error = error;
    this.runs.set(key, { rec, end: (offset ?? 0) + (length ?? 0) });
  }

  /** Writes out the runs nobody extended within the window. */
  private flushIdle(now: number): void {
    for (const [key, run] of this.runs) {
      if (now - (run.rec.lastT ?? run.rec.t) > this.windowMs) {
        this.runs.delete(key);
        this.emit(run.rec);
      }
    }
  }

  private emit(rec: AccessRecord): void {
    if (rec.count === undefined) rec.count = 1;
    if (rec.lastT === undefined) rec.lastT = rec.t;
    const line = `${JSON.stringify(rec)}\n`;
    if (this.pendingBytes + line.length > this.maxPending) {
      this.dropped++;
      if (this.droppedUnreported++ === 0) {
        log.warn("access log writer is behind; dropping records", { file: this.file });
      }
      return;
    }
    this.pending.push(line);
    this.pendingBytes += line.length;
    this.records++;
    this.writing ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0 && this.fh) {
        if (this.droppedUnreported > 0) {
          const n = this.droppedUnreported;
          this.droppedUnreported = 0;
          log.warn("access log records dropped", { file: this.file, dropped: n });
          this.pending.push(
            `${JSON.stringify({ t: Date.now(), pid: 0, op: "dropped", path: "", count: n })}\n`,
          );
        }
        const chunk = this.pending.join("");
        this.pending = [];
        this.pendingBytes = 0;
        await this.fh.write(chunk);
      }
    } catch (err) {
      log.warn("cannot write the access log; stopping it", {
        file: this.file,
        error: errorMessage(err),
      });
      this.closed = true;
      this.pending = [];
      this.pendingBytes = 0;
    } finally {
      this.writing = undefined;
    }
  }

  figures(): AccessLogFigures {
    return {
      file: this.file,
      records: this.records,
      requests: this.requests,
      dropped: this.dropped,
    };
  }

  /** Writes out every open run (later requests start new records) and waits for the writer. */
  async flush(): Promise<void> {
    if (!this.closed) {
      const runs = [...this.runs.values()].sort((a, b) => a.rec.t - b.rec.t);
      this.runs.clear();
      for (const run of runs) this.emit(run.rec);
    }
    while (this.writing) await this.writing;
  }

  /** Writes every open run and closes the file. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    this.closed = true;
    while (this.writing) await this.writing;
    await this.fh?.close();
    this.fh = undefined;
  }
}
