/**
 * One request of the SFTP origin: a timeout on every attempt and, after a dropped connection,
 * a reconnect with backoff and a retry as the outage policy says (hard, soft or bounded
 * retries; reconnect.ts keeps the connection). Kept apart from the origin's operations so that
 * each of them is only the SFTP call it makes. Failures are `UserError`s naming host and path.
 */
import { errorMessage, UserError } from "../../common/errors.js";
import { logger } from "../../common/log.js";
import type { OriginHealth } from "../health.js";
import type { OutagePolicy, Reconnector } from "../reconnect.js";
import { isNotFound } from "../types.js";
import type { Connection } from "./connection.js";

const log = logger("origin/sftp");

export class FatalError extends UserError {}

/** A check refused the data: not an outage, never retried. */
export class CheckFailed extends Error {}

function isSftpStatus(err: unknown): boolean {
  return typeof (err as { code?: unknown })?.code === "number";
}

const SFTP_STATUS: Record<number, string> = {
  1: "EOF",
  2: "no such file",
  3: "permission denied",
  4: "failure",
  8: "operation unsupported",
};

/** What a request needs of its origin. */
export interface RequestContext {
  /** The origin's name now (it changes when the origin is retargeted). */
  name(): string;
  /** The origin is being closed: a failure is final. */
  closing(): boolean;
  keeper: Reconnector<Connection>;
  outage: OutagePolicy;
  health: OriginHealth;
  /** First delay between requests failing on connections that were made, doubled each time. */
  backoffMs: number;
}

/** Runs one request with a timeout, reconnecting with backoff after a dropped connection. */
export async function request<T>(
  ctx: RequestContext,
  what: string,
  fn: (c: Connection) => Promise<T>,
  timeoutMs: number,
): Promise<T> {
  const policy = ctx.outage;
  // Soft: the origin may be given `timeoutMs` per request, and no more than that since it
  // went away. Once that has passed the origin is declared away: a request fails at once (no
  // wait for the reconnect loop's next attempt) until the link is back, and only wakes the
  // loop so that the link is found again as soon as it returns.
  const lostSince = ctx.keeper.lostSince();
  if (policy.mode === "soft" && lostSince !== null && Date.now() - lostSince >= policy.timeoutMs) {
    ctx.keeper.kick();
    throw new UserError(
      `${ctx.name()}: ${what}: origin unreachable for more than ${policy.timeoutMs} ms (${ctx.keeper.status().lastError ?? "connection lost"})`,
    );
  }
  const deadline =
    policy.mode === "soft"
      ? (lostSince ?? Date.now()) + policy.timeoutMs
      : Number.POSITIVE_INFINITY;
  const maxFailures = policy.mode === "retries" ? policy.maxRetries : Number.POSITIVE_INFINITY;
  let delay = ctx.backoffMs;
  for (let attempt = 0; ; attempt++) {
    let conn: Connection | undefined;
    let attemptStart = Date.now();
    try {
      conn = await ctx.keeper.get(deadline, maxFailures - attempt);
      attemptStart = Date.now();
      const left = Math.max(1, Math.min(timeoutMs, deadline - Date.now()));
      return await withTimeout(ctx, what, conn, fn(conn), left);
    } catch (err) {
      if (err instanceof CheckFailed) throw err.cause;
      if (err instanceof FatalError || ctx.closing()) throw err;
      // A connection failure was counted where it happened (connection()); a name that
      // does not exist is an answer, not an error.
      if (conn && !isNotFound(err)) ctx.health.error(errorMessage(err));
      if (isSftpStatus(err)) {
        const code = (err as { code: number }).code;
        throw new UserError(`${ctx.name()}: ${what}: ${SFTP_STATUS[code] ?? errorMessage(err)}`, {
          cause: err,
        });
      }
      if (Date.now() >= deadline) {
        throw new UserError(
          `${ctx.name()}: ${what}: origin unreachable for ${policy.mode === "soft" ? policy.timeoutMs : 0} ms (${errorMessage(err)})`,
          { cause: err },
        );
      }
      if (!conn || attempt >= maxFailures) {
        throw err instanceof UserError
          ? err
          : new UserError(`${ctx.name()}: ${what}: ${errorMessage(err)}`, { cause: err });
      }
      log.info("request failed; reconnecting", { host: ctx.name(), what, attempt });
      if (!conn.closed) {
        conn.closed = true;
        conn.client.end();
      }
      ctx.keeper.lost(conn, err, attemptStart);
      // The keeper backs off between connection attempts; this spaces out requests that
      // fail on a connection that was made.
      if (attempt > 0) {
        await new Promise((r) => setTimeout(r, Math.min(delay, deadline - Date.now())));
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }
}

function withTimeout<T>(
  ctx: RequestContext,
  what: string,
  conn: Connection,
  p: Promise<T>,
  timeoutMs: number,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      conn.closed = true;
      conn.client.end();
      reject(new UserError(`${ctx.name()}: ${what}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
