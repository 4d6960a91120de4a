/**
 * The client host c and the service address S: c reaches a and b over links of its own, S
 * is routed to exactly one of them, and moving it moves where new connections land. The
 * measured a<->b link carries none of it.
 */
import assert from "node:assert/strict";
import { before, test } from "node:test";
import {
  type ClientHostPair,
  cleanupStaleHosts,
  createHostPair,
  type Host,
} from "../../src/hosts/index.js";
import { waitForMarker, watch } from "../../src/hosts/run.js";

before(async () => {
  await cleanupStaleHosts();
});

const PORT = "7007";

/** Answers each connection with "<host name> <what it received>" and closes it. */
const ECHO = `
import socket, sys
srv = socket.create_server(("", int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    conn.sendall(sys.argv[1].encode() + b" " + conn.recv(100))
    conn.close()
`;

/** Connects from c to addr:PORT, sends `hello`; the answer (or the error). */
const CONNECT = `
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"hello")
    print(s.recv(100).decode(), "from", s.getsockname()[0])
except OSError as e:
    print("error", e.errno)
`;

async function startEcho(host: Host): Promise<void> {
  const w = watch(host.spawn("python3", ["-c", ECHO, host.role, PORT]));
  await waitForMarker(w, "listening", `echo server on ${host.name}`);
}

async function ask(pair: ClientHostPair, addr: string): Promise<string> {
  return (await pair.c.exec("python3", ["-c", CONNECT, addr, PORT])).stdout.trim();
}

test("c reaches a and b; S goes to a, then to b after routeServiceTo(b)", async () => {
  const pair = await createHostPair({ client: true });
  try {
    const { a, b, c } = pair;
    assert.match(pair.serviceAddress, /^10\.214\.\d+\.100$/);
    assert.equal(c.iface, "lo");
    await startEcho(a);
    await startEcho(b);
    const link0 = await pair.link.counters();

    // c's own address is the source of everything it sends, over either of its links.
    assert.equal(await ask(pair, a.address), `a hello from ${c.address}`);
    assert.equal(await ask(pair, b.address), `b hello from ${c.address}`);
    // S is nowhere until it is routed: network unreachable.
    assert.equal(await ask(pair, pair.serviceAddress), "error 101");

    await pair.addServiceAddress(a);
    await pair.routeServiceTo(a);
    assert.equal(await ask(pair, pair.serviceAddress), `a hello from ${c.address}`);

    // The service moves: b takes S, c routes it there, a lets it go.
    await pair.addServiceAddress(b);
    await pair.routeServiceTo(b);
    await pair.removeServiceAddress(a);
    await pair.removeServiceAddress(a); // idempotent
    assert.equal(await ask(pair, pair.serviceAddress), `b hello from ${c.address}`);
    const held = async (h: Host) =>
      (await h.exec("ip", ["-4", "-o", "addr", "show", "dev", "lo"])).stdout;
    assert.ok(!(await held(a)).includes(pair.serviceAddress));
    assert.ok((await held(b)).includes(`${pair.serviceAddress}/32`));
    const route = (await c.exec("ip", ["route", "get", pair.serviceAddress])).stdout;
    assert.match(route, /dev veth-b src 10\.214\.\d+\.200/);

    // None of it went over the measured a<->b link, and nobody asked for a MAC (no ARP).
    assert.deepEqual(await pair.link.counters(), link0);
    for (const host of [a, b, c]) {
      const neigh = (await host.exec("ip", ["neigh", "show"])).stdout.trim().split("\n");
      for (const line of neigh) assert.match(line, /PERMANENT/, `${host.role}: ${line}`);
    }
    await assert.rejects(
      pair.addServiceAddress(c),
      /served by a or b/,
      "c cannot hold the service address",
    );
  } finally {
    await pair.destroy();
  }
});

test("a pair made without a client has no c and no service address", async () => {
  const pair = await createHostPair();
  try {
    assert.equal(pair.c, undefined);
    assert.equal(pair.serviceAddress, undefined);
    await assert.rejects(pair.routeServiceTo(pair.a), /no client host/);
  } finally {
    await pair.destroy();
  }
});
