/**
 * libc through koffi (an FFI shipped as an npm package), for the few system calls Node has no
 * binding for (the FUSE backing ioctls, ptrace). Loaded once, on first use; where it cannot
 * be loaded the caller gets the reason as a string and does without.
 */
import { createRequire } from "node:module";
import { constants } from "node:os";
import { errorMessage } from "./errors.js";

export interface LibcFunctions {
  /** A C declaration ("int ioctl(int, unsigned long, ...)") or name, return type, arguments. */
  func(decl: string): unknown;
  func(name: string, ret: string, args: string[]): unknown;
}

export interface Libc {
  lib: LibcFunctions;
  /** errno of the last call made through koffi on this thread. */
  errno(): number;
}

let loaded: Libc | string | undefined;

/** libc, or why it cannot be had here. */
export function loadLibc(): Libc | string {
  loaded ??= load();
  return loaded;
}

function load(): Libc | string {
  try {
    const koffi = createRequire(import.meta.url)("koffi") as {
      load(name: string): LibcFunctions;
      errno(): number;
    };
    return { lib: koffi.load("libc.so.6"), errno: () => koffi.errno() };
  } catch (err) {
    return `koffi (FFI) not available: ${errorMessage(err)}`;
  }
}

const codes = new Map(Object.entries(constants.errno).map(([k, v]) => [v as number, k]));

/** "ENOENT" for 2, "errno N" for a number Node does not name. */
export function errnoName(n: number): string {
  return codes.get(n) ?? `errno ${n}`;
}
