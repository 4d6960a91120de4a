/**
 * Ctrl-C (SIGINT), SIGTERM and SIGHUP during `lazyfs migrate`. Until the dump starts, a signal
 * stops the migration at the next step: what it made on either host is removed (the process
 * never stopped running at the origin) and the command ends with one line and exit 128+N.
 * From the dump on, stopping halfway could leave the process on both hosts or on neither: the
 * migration is finished first, and the command ends as it would have without the signal (a
 * completed migration prints its result and exits 0).
 */
import { constants } from "node:os";
import { UserError } from "../common/errors.js";
import { logger } from "../common/log.js";

const log = logger("migrate");

const SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** The migration was stopped by a signal before the dump: nothing of it is left. */
export class MigrationInterrupted extends UserError {
  constructor(
    readonly signal: NodeJS.Signals,
    origin: string,
  ) {
    super(
      `interrupted (${signal}) before the dump: nothing was migrated; the process runs on at ${origin}`,
      {
        exitCode: 128 + constants.signals[signal],
      },
    );
  }
}

/** The signals of one `migrate` run: stop before the dump (check, race), finish after it. */
export class Interruption {
  #signal: NodeJS.Signals | undefined;
  #committed = false;
  #wake: (() => void) | undefined;
  /** Interruptions of the migrations a drain runs: each hears this one's signal. */
  readonly #children = new Set<Interruption>();
  #parent: Interruption | undefined;
  readonly #aborter = new AbortController();
  readonly #onSignal = (sig: NodeJS.Signals) => {
    if (this.#signal) return;
    this.#signal = sig;
    this.#aborter.abort(sig);
    if (this.#committed) log.warn(`${sig} received: finishing the migration first (a few seconds)`);
    this.#wake?.();
    for (const child of this.#children) child.#onSignal(sig);
  };

  /** Takes over the three signals until close(). */
  static listen(): Interruption {
    const i = new Interruption();
    for (const s of SIGNALS) process.on(s, i.#onSignal);
    return i;
  }

  /**
   * One migration's Interruption inside a drain: it hears this one's signals (a signal that
   * already came counts) without listening to the process itself, and has its own dump point.
   */
  child(): Interruption {
    const c = new Interruption();
    c.#parent = this;
    this.#children.add(c);
    if (this.#signal) c.#onSignal(this.#signal);
    return c;
  }

  /** The first signal received, if any. */
  get signal(): NodeJS.Signals | undefined {
    return this.#signal;
  }

  /**
   * Aborted by the first signal: for a wait after the migration completed (`--detach`'s wait
   * for independence), which a signal ends while the migration stands.
   */
  get aborted(): AbortSignal {
    return this.#aborter.signal;
  }

  /** Before the dump: the error that stops the migration, once a signal came. */
  stopped(origin: string): MigrationInterrupted | undefined {
    return this.#signal && !this.#committed
      ? new MigrationInterrupted(this.#signal, origin)
      : undefined;
  }

  /** Before the dump: throws MigrationInterrupted once a signal came. */
  check(origin: string): void {
    const stop = this.stopped(origin);
    if (stop) throw stop;
  }

  /**
   * Waits for `p`, or stops waiting when a signal comes first (before the dump). Only for a
   * step that leaves nothing behind when abandoned (connecting).
   */
  async race<T>(p: Promise<T>, origin: string): Promise<T> {
    this.check(origin);
    const signalled = new Promise<never>((_, reject) => {
      this.#wake = () => reject(new MigrationInterrupted(this.#signal!, origin));
    });
    try {
      return await Promise.race([p, signalled]);
    } finally {
      this.#wake = undefined;
    }
  }

  /** The dump starts: from here on a signal no longer stops the migration. */
  commit(): void {
    this.#committed = true;
  }

  /** Gives the signals back to their default action (a child: stops hearing its parent). */
  close(): void {
    if (this.#parent) this.#parent.#children.delete(this);
    for (const s of SIGNALS) process.off(s, this.#onSignal);
  }
}
