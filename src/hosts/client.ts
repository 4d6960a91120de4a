/**
 * The client host c and the service address that moves between a and b.
 *
 * c is joined to a and to b by a veth link each, apart from the measured a<->b link (whose
 * counters and shaping stay a's and b's alone). With the pair's subnet N:
 *
 *   a veth-c 10.214.N.1/30  <->  10.214.N.2/30 veth-a  c  veth-b 10.214.N.6/30  <->  10.214.N.5/30 veth-c b
 *
 * c's own address is 10.214.N.200/32 on its lo, and c sends everything from it (routes with
 * `src`), so a connection keeps the same client address whichever link carries it; a and b
 * route it back over their link to c. c reaches a.address and b.address over its links (for
 * SSH from c, e.g. a chained migration a -> b -> c). The service address S = 10.214.N.100/32
 * is held by a and/or b on their lo (`add`/`remove`), and c routes S to exactly one of them
 * (`routeTo`; none until the first call). No forwarding anywhere: c talks to a and b, a and b
 * to each other.
 */
import type { Host } from "./host.js";
import { connectHosts, ipIn } from "./net.js";

/** The device of a's and of b's link to c. */
const TO_CLIENT = "veth-c";

export interface ClientPlan {
  /** c's own address (on its lo). */
  client: string;
  /** The service address S. */
  service: string;
  /** Per server host: its end and c's end of their link. */
  links: { a: { server: string; client: string }; b: { server: string; client: string } };
}

export function clientPlan(subnet: number): ClientPlan {
  const net = `10.214.${subnet}`;
  return {
    client: `${net}.200`,
    service: `${net}.100`,
    links: {
      a: { server: `${net}.1`, client: `${net}.2` },
      b: { server: `${net}.5`, client: `${net}.6` },
    },
  };
}

/** Joins c to a and b (links, c's address, routes both ways). */
export async function joinClient(
  a: Host,
  b: Host,
  c: Host,
  plan: ClientPlan,
): Promise<ServiceAddress> {
  await ipIn(c, "addr", "add", `${plan.client}/32`, "dev", "lo");
  for (const server of [a, b]) {
    const ends = serverEnds(plan, server);
    await connectHosts(
      { host: server, iface: TO_CLIENT, address: ends.server },
      { host: c, iface: `veth-${server.role}`, address: ends.client },
      30,
    );
    await ipIn(c, "route", "add", `${server.address}/32`, ...viaServer(plan, server));
    await ipIn(server, "route", "add", `${plan.client}/32`, "via", ends.client, "dev", TO_CLIENT);
  }
  return new ServiceAddress(plan, c);
}

function serverEnds(plan: ClientPlan, server: Host): { server: string; client: string } {
  if (server.role === "c") throw new Error("hosts: the service is served by a or b, not c");
  return plan.links[server.role];
}

/** Route arguments on c: through `server`'s link, from c's own address. */
function viaServer(plan: ClientPlan, server: Host): string[] {
  const ends = serverEnds(plan, server);
  return ["via", ends.server, "dev", `veth-${server.role}`, "src", plan.client];
}

/** S: which of a and b hold it, and where c sends it. */
export class ServiceAddress {
  constructor(
    private readonly plan: ClientPlan,
    private readonly c: Host,
  ) {}

  get address(): string {
    return this.plan.service;
  }

  /** `host` (a or b) answers on S from now on (S on its lo). Idempotent. */
  async add(host: Host): Promise<void> {
    serverEnds(this.plan, host);
    await ipIn(host, "addr", "replace", `${this.plan.service}/32`, "dev", "lo");
  }

  /** `host` no longer holds S. No error if it did not. */
  async remove(host: Host): Promise<void> {
    serverEnds(this.plan, host);
    const held = await ipIn(
      host,
      "-j",
      "addr",
      "show",
      "dev",
      "lo",
      "to",
      `${this.plan.service}/32`,
    );
    if ((JSON.parse(held.stdout) as { addr_info?: unknown[] }[])[0]?.addr_info?.length) {
      await ipIn(host, "addr", "del", `${this.plan.service}/32`, "dev", "lo");
    }
  }

  /** c sends S to `host` (a or b) from now on, established connections included. */
  async routeTo(host: Host): Promise<void> {
    await ipIn(
      this.c,
      "route",
      "replace",
      `${this.plan.service}/32`,
      ...viaServer(this.plan, host),
    );
  }
}
