/**
 * The whole-origin view (`--view whole`, the default): the restored process sees the origin's
 * whole file tree, except the paths that belong to the host it now runs on. Those stay the
 * target's: the kernel's file systems, the host's identity and network files, scratch space,
 * and LazyFS's own paths (criu restore runs inside the view and must find its binary, its
 * images and the mount).
 *
 * `/tmp` is the target's: it holds the target's sockets and other programs' scratch files
 * (a unix socket on LazyFS would reach no listener here), and a process's own files there
 * are still served, in directories of their own (the data's bind roots).
 */
import { dirname } from "node:path";
import { UserError } from "../common/errors.js";
import { isUnder } from "../common/paths.js";
import type { View } from "./manifest.js";
import { DEFAULT_MOUNT_ROOT, DEFAULT_STATE_ROOT, stateRoot } from "./state.js";

export const DEFAULT_HOST_PATHS: readonly string[] = [
  "/proc",
  "/sys",
  "/dev",
  "/run",
  "/tmp",
  "/etc/hostname",
  "/etc/hosts",
  "/etc/resolv.conf",
  "/opt/lazyfs",
  DEFAULT_STATE_ROOT,
  DEFAULT_MOUNT_ROOT,
];

export function parseView(text: string): View {
  if (text === "whole" || text === "dirs") return text;
  throw new UserError(`--view ${JSON.stringify(text)}: expected whole or dirs`);
}

/**
 * The host paths of a migration: the defaults, where this host keeps LazyFS's state and
 * mount, the directory of the criu binary restore runs, and the user's (`--host-path`).
 */
export function hostPathsFor(opts: {
  extra?: readonly string[];
  mountpoint: string;
  criuPath?: string;
}): string[] {
  const all = [
    ...DEFAULT_HOST_PATHS,
    stateRoot(),
    dirname(opts.mountpoint),
    ...(opts.criuPath ? [dirname(opts.criuPath)] : []),
    ...(opts.extra ?? []),
  ].filter((p) => p !== "/");
  const unique = [...new Set(all)];
  return unique.filter((p) => !unique.some((q) => q !== p && isUnder(p, q))).sort();
}
