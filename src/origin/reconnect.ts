/**
 * Keeping a connection to the origin through outages, with NFS-like semantics:
 *
 * - `hard`: a request waits, however long the origin is away, and goes on once it is back;
 * - `soft`: a request fails after `timeoutMs` without the origin; reconnecting goes on for
 *   later requests;
 * - `retries` (default, for one-shot commands such as `migrate`): a request gives up after
 *   `maxRetries` failed attempts.
 *
 * One loop (re)connects with exponential backoff; every request waits on it. Its state is
 * known at any time without asking the origin (`status()`), so that a status query never
 * waits for an unreachable host.
 */
import { errorMessage, UserError } from "../common/errors.js";

export type OutagePolicy =
  | { mode: "hard" }
  | { mode: "soft"; timeoutMs: number }
  | { mode: "retries"; maxRetries: number };

export type LinkState = "connected" | "reconnecting" | "unreachable" | "idle" | "closed";

/** What `status` shows of the origin connection. */
export interface LinkStatus {
  state: LinkState;
  /** Where the origin is reached, e.g. `root@10.0.0.1:22`. */
  address: string;
  /** connected: since when; reconnecting/unreachable: since the connection was lost. */
  sinceMs: number | null;
  /** Failed connection attempts since the connection was lost. */
  attempt: number;
  /** When reconnecting: in how long the next attempt starts. */
  nextAttemptInMs: number | null;
  lastError: string | null;
}

interface Waiter<C> {
  resolve(c: C): void;
  reject(err: unknown): void;
  failuresLeft: number;
  timer?: NodeJS.Timeout;
}

export interface ReconnectorOptions<C> {
  /** First backoff delay (doubled per failed attempt). */
  backoffMs: number;
  maxBackoffMs: number;
  /** Keep reconnecting while nobody waits (a daemon that will need the origin again). */
  persistent: boolean;
  /** Lost for longer than this: `unreachable` rather than `reconnecting`. */
  unreachableAfterMs: number;
  /** Errors that no retry can fix (authentication, host key): waiters fail at once. */
  isFatal(err: unknown): boolean;
  /** Closes a connection that is no longer wanted (made for an address since left). */
  dispose(c: C): void;
}

export class Reconnector<C> {
  private current?: C;
  private connectedSinceMs: number | null = null;
  private lostSinceMs: number | null = null;
  private attempt = 0;
  private nextAttemptAtMs: number | null = null;
  private lastError: string | null = null;
  private readonly waiters = new Set<Waiter<C>>();
  private looping = false;
  private wake?: () => void;
  private closed = false;

  constructor(
    private open: () => Promise<C>,
    private readonly opts: ReconnectorOptions<C>,
    public address: string,
  ) {}

  /**
   * The connection, once there is one. `deadlineMs` (absolute, Infinity for none) and
   * `maxFailures` (failed connection attempts) bound the wait; past either the promise
   * rejects with a UserError saying why.
   */
  get(deadlineMs: number, maxFailures = Number.POSITIVE_INFINITY): Promise<C> {
    if (this.closed) return Promise.reject(new UserError(`${this.address}: origin is closed`));
    if (this.current) return Promise.resolve(this.current);
    return new Promise<C>((resolve, reject) => {
      const w: Waiter<C> = { resolve, reject, failuresLeft: maxFailures };
      if (Number.isFinite(deadlineMs)) {
        w.timer = setTimeout(
          () => {
            this.waiters.delete(w);
            reject(
              new UserError(
                `${this.address}: origin unreachable${this.lastError ? ` (${this.lastError})` : ""}`,
              ),
            );
          },
          Math.max(0, deadlineMs - Date.now()),
        );
      }
      this.waiters.add(w);
      this.loop();
    });
  }

  /**
   * The connection `c` is gone (closed, timed out): reconnect. `sinceMs`: since when it has
   * been of no use (a request that timed out started then).
   */
  lost(c: C, err?: unknown, sinceMs = Date.now()): void {
    if (this.current !== c) return;
    this.current = undefined;
    this.connectedSinceMs = null;
    this.lostSinceMs ??= sinceMs;
    if (err !== undefined) this.lastError = errorMessage(err);
    if (this.opts.persistent) this.loop();
  }

  /** From now on connect with `open` (a new address); `c`, if given, is already connected. */
  retarget(open: () => Promise<C>, address: string, c?: C): C | undefined {
    this.open = open;
    this.address = address;
    const old = this.current;
    this.current = undefined;
    if (c) this.connected(c);
    else this.wake?.();
    return old;
  }

  /** Since when the origin has been away (null while connected or never lost). */
  lostSince(): number | null {
    return this.current ? null : this.lostSinceMs;
  }

  /**
   * Not connected and waiting out a backoff delay: try now instead. True when that started
   * a fresh attempt (a request may then wait for it).
   */
  kick(): boolean {
    if (this.current || !this.wake) return false;
    this.wake();
    return true;
  }

  status(): LinkStatus {
    const now = Date.now();
    const base = {
      address: this.address,
      attempt: this.attempt,
      lastError: this.lastError,
    };
    if (this.closed) return { ...base, state: "closed", sinceMs: null, nextAttemptInMs: null };
    if (this.current) {
      return { ...base, state: "connected", sinceMs: this.connectedSinceMs, nextAttemptInMs: null };
    }
    if (this.lostSinceMs === null) {
      return { ...base, state: "idle", sinceMs: null, nextAttemptInMs: null };
    }
    const since = this.lostSinceMs ?? now;
    return {
      ...base,
      state: now - since >= this.opts.unreachableAfterMs ? "unreachable" : "reconnecting",
      sinceMs: since,
      nextAttemptInMs:
        this.nextAttemptAtMs === null ? null : Math.max(0, this.nextAttemptAtMs - now),
    };
  }

  close(): C | undefined {
    this.closed = true;
    this.wake?.();
    const err = new UserError(`${this.address}: origin is closed`);
    for (const w of this.waiters) this.fail(w, err);
    const c = this.current;
    this.current = undefined;
    return c;
  }

  private connected(c: C) {
    this.current = c;
    this.connectedSinceMs = Date.now();
    this.lostSinceMs = null;
    this.attempt = 0;
    this.nextAttemptAtMs = null;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(c);
    }
    this.waiters.clear();
  }

  private fail(w: Waiter<C>, err: unknown) {
    clearTimeout(w.timer);
    this.waiters.delete(w);
    w.reject(err);
  }

  private loop(): void {
    if (this.looping || this.closed) return;
    this.looping = true;
    void (async () => {
      try {
        while (!this.closed && !this.current && (this.waiters.size > 0 || this.opts.persistent)) {
          const open = this.open;
          try {
            const c = await open();
            if (this.closed) {
              this.opts.dispose(c);
              return;
            }
            if (open !== this.open || this.current) {
              this.opts.dispose(c); // retargeted meanwhile
              continue;
            }
            this.connected(c);
            return;
          } catch (err) {
            if (this.closed) return;
            this.lastError = errorMessage(err);
            this.lostSinceMs ??= Date.now();
            this.attempt++;
            for (const w of [...this.waiters]) {
              if (this.opts.isFatal(err) || --w.failuresLeft < 0) this.fail(w, err);
            }
            if (this.opts.isFatal(err) && !this.opts.persistent) return;
            const delay = Math.min(
              this.opts.backoffMs * 2 ** Math.min(this.attempt - 1, 20),
              this.opts.maxBackoffMs,
            );
            this.nextAttemptAtMs = Date.now() + delay;
            await new Promise<void>((resolve) => {
              const t = setTimeout(resolve, delay);
              this.wake = () => {
                clearTimeout(t);
                resolve();
              };
            });
            this.wake = undefined;
            this.nextAttemptAtMs = null;
          }
        }
      } finally {
        this.looping = false;
      }
    })();
  }
}
