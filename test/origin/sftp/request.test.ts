/**
 * The soft outage policy of an origin request (`--origin-timeout`): once the origin has been
 * away for longer than the timeout, a request fails at once, without waiting for the
 * reconnect loop's next attempt, and the loop goes on so that the link is found again.
 * Connections here are stand-ins whose connecting the test controls; no time is asserted:
 * "at once" means the request is settled before any timer could have run.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Client } from "ssh2";
import { UserError } from "../../../src/common/errors.js";
import { OriginHealth } from "../../../src/origin/health.js";
import { type OutagePolicy, Reconnector } from "../../../src/origin/reconnect.js";
import type { Connection } from "../../../src/origin/sftp/connection.js";
import { type RequestContext, request } from "../../../src/origin/sftp/request.js";

function fakeConnection(): Connection {
  const conn = { closed: false, client: { end: () => {} } as unknown as Client };
  return conn as unknown as Connection;
}

/** A keeper whose connection attempts wait for the test: `attempts` are resolved by hand. */
function keeperOf() {
  const attempts: { resolve(c: Connection): void; reject(e: unknown): void }[] = [];
  const keeper = new Reconnector<Connection>(
    () =>
      new Promise<Connection>((resolve, reject) => {
        attempts.push({ resolve, reject });
      }),
    {
      backoffMs: 60_000,
      maxBackoffMs: 60_000,
      persistent: true,
      unreachableAfterMs: 50,
      isFatal: () => false,
      dispose: () => {},
    },
    "origin.test",
  );
  return { keeper, attempts };
}

function context(keeper: Reconnector<Connection>, outage: OutagePolicy): RequestContext {
  return {
    name: () => "origin.test",
    closing: () => false,
    keeper,
    outage,
    health: new OriginHealth(),
    backoffMs: 10,
  };
}

/** Whether `p` has settled after the promise jobs and I/O callbacks now due (no timers). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

describe("origin request, soft outage policy", () => {
  it("fails at once once the origin has been away longer than the timeout, and still reconnects", async () => {
    const { keeper, attempts } = keeperOf();
    const ctx = context(keeper, { mode: "soft", timeoutMs: 50 });
    // Connected, then the connection is lost (as a request that timed out finds it).
    const first = keeper.get(Number.POSITIVE_INFINITY);
    attempts.shift()!.resolve(fakeConnection());
    const conn = await first;
    keeper.lost(conn, new Error("no answer"), Date.now() - 1000);
    // The reconnect loop's attempt fails; it then backs off for a minute.
    await new Promise((r) => setImmediate(r));
    attempts.shift()!.reject(new Error("connect timed out"));
    await new Promise((r) => setImmediate(r));
    assert.equal(keeper.status().state, "unreachable");

    for (const what of ["second read", "third read"]) {
      const p = request(ctx, what, async () => "bytes", 60_000);
      assert.equal(await settled(p), true, `${what}: settled without waiting for a reconnect`);
      await assert.rejects(p, (err: unknown) => {
        assert.ok(err instanceof UserError);
        assert.match(err.message, /origin unreachable/);
        return true;
      });
    }
    // Each failed request woke the loop: an attempt is under way, and once it connects the
    // next request is served.
    assert.equal(attempts.length, 1, "a fresh connection attempt started");
    attempts.shift()!.resolve(fakeConnection());
    await new Promise((r) => setImmediate(r));
    assert.equal(keeper.status().state, "connected");
    assert.equal(await request(ctx, "read after the outage", async () => "bytes", 60_000), "bytes");
    keeper.close();
  });

  it("gives a request the timeout when the origin has just gone away", async () => {
    const { keeper, attempts } = keeperOf();
    const ctx = context(keeper, { mode: "soft", timeoutMs: 60_000 });
    const first = keeper.get(Number.POSITIVE_INFINITY);
    attempts.shift()!.resolve(fakeConnection());
    keeper.lost(await first, new Error("no answer"));
    const p = request(ctx, "read", async () => "bytes", 60_000);
    assert.equal(await settled(p), false, "the request waits for the reconnect");
    attempts.shift()!.resolve(fakeConnection());
    assert.equal(await p, "bytes");
    keeper.close();
  });
});
