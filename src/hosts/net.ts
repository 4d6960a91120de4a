/**
 * Network plumbing of the simulated hosts: veth links between two hosts' network namespaces
 * that carry only the hosts' own traffic. No IPv6 (router solicitations, MLD) and no ARP
 * (each end knows the other's MAC as a permanent neighbour), so an idle link counts zero
 * bytes. Addresses and routes are the callers' (pair.ts, client.ts).
 */
import type { Host } from "./host.js";
import { type RunResult, runCommand } from "./run.js";

/** `ip -n <host's netns> ...args`. */
export function ipIn(host: Host, ...args: string[]): Promise<RunResult> {
  return runCommand(["ip", "-n", host.netns, ...args], { label: `host ${host.name}` });
}

/** A fresh network namespace made quiet: IPv6 off (also for devices made later), lo up. */
export async function quietNetns(host: Host): Promise<void> {
  await runCommand(
    [
      "ip",
      "netns",
      "exec",
      host.netns,
      "sysctl",
      "-qw",
      "net.ipv6.conf.all.disable_ipv6=1",
      "net.ipv6.conf.default.disable_ipv6=1",
    ],
    { label: `host ${host.name}` },
  );
  await ipIn(host, "link", "set", "lo", "up");
}

/** One end of a veth link: the device's name in `host` and its address. */
export interface LinkEnd {
  host: Host;
  iface: string;
  address: string;
}

/** Creates a veth between two hosts, addresses both ends (`/prefixLen`), brings them up. */
export async function connectHosts(x: LinkEnd, y: LinkEnd, prefixLen: number): Promise<void> {
  await runCommand([
    "ip",
    "link",
    "add",
    x.iface,
    "netns",
    x.host.netns,
    "type",
    "veth",
    "peer",
    "name",
    y.iface,
    "netns",
    y.host.netns,
  ]);
  const macs: string[] = [];
  for (const end of [x, y]) {
    await ipIn(end.host, "addr", "add", `${end.address}/${prefixLen}`, "dev", end.iface);
    await ipIn(end.host, "link", "set", end.iface, "up");
    const { stdout } = await ipIn(end.host, "-j", "link", "show", "dev", end.iface);
    macs.push((JSON.parse(stdout) as { address: string }[])[0]!.address);
  }
  // ...and no ARP: each end knows the other's MAC for good.
  for (const [end, peer, mac] of [
    [x, y, macs[1]!],
    [y, x, macs[0]!],
  ] as const) {
    await ipIn(
      end.host,
      "neigh",
      "replace",
      peer.address,
      "lladdr",
      mac,
      "dev",
      end.iface,
      "nud",
      "permanent",
    );
  }
}
