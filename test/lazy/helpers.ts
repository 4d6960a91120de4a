/** A LazyFS mount over an origin, for the lazy/ tests: engine + file system + FUSE mount. */
import type { Engine, EngineOptions, PolicyRule } from "../../src/fetch/index.js";
import { Engine as EngineClass } from "../../src/fetch/index.js";
import {
  LazyFileSystem,
  type LazyMount,
  mountLazyFs,
  type TreeSpec,
} from "../../src/lazy/index.js";

export interface LazyFixture {
  engine: Engine;
  fs: LazyFileSystem;
  mount: LazyMount;
  /** Unmounts and closes the engine (what a daemon's shutdown does). */
  close(): Promise<void>;
}

export async function mountLazy(opts: {
  mountpoint: string;
  cacheDir: string;
  origin: EngineOptions["origin"];
  spec: TreeSpec;
  policies?: PolicyRule[];
  prefetch?: EngineOptions["prefetch"];
  blockSize?: number;
}): Promise<LazyFixture> {
  const engine = await EngineClass.open({
    cacheDir: opts.cacheDir,
    origin: opts.origin,
    blockSize: opts.blockSize ?? 64 * 1024,
    ...(opts.prefetch ? { prefetch: opts.prefetch } : {}),
  });
  const fs = new LazyFileSystem(opts.spec, engine, {
    cacheDir: opts.cacheDir,
    policies: opts.policies ?? [],
  });
  const mount = await mountLazyFs({ mountpoint: opts.mountpoint }, fs);
  let closed = false;
  return {
    engine,
    fs,
    mount,
    async close() {
      if (closed) return;
      closed = true;
      await mount.unmount().catch(() => {});
      await engine.close();
    },
  };
}

const PRELUDE = `
import json, os, sys, stat
A = sys.argv[1]
out = {}
def names(p): return sorted(os.listdir(p))
def st(p):
    s = os.lstat(p)
    return {"mode": s.st_mode & 0o7777, "uid": s.st_uid, "gid": s.st_gid, "nlink": s.st_nlink, "size": s.st_size}
def read(p, mode="r"):
    with open(p, mode) as f: return f.read()
def err(fn, *a):
    try:
        fn(*a)
        return None
    except OSError as e:
        return e.strerror
`;

/**
 * Runs python3 against the mount in another process (this process serves the mount, so it
 * must not block on it): `A` is `dir`, `out` a dict printed as JSON at the end.
 */
export async function pyfs(dir: string, body: string): Promise<Record<string, unknown>> {
  const { execFile } = await import("node:child_process");
  const script = `${PRELUDE}\n${body}\nprint(json.dumps(out))\n`;
  return new Promise((resolve, reject) => {
    execFile("python3", ["-c", script, dir], { timeout: 60_000 }, (e, stdout, stderr) => {
      if (e) reject(new Error(`python failed: ${stderr || e.message}`));
      else resolve(JSON.parse(stdout) as Record<string, unknown>);
    });
  });
}
