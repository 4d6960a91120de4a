/**
 * A LazyFS mount for bench/fuse.ts: one migrated file served from a local origin, fetched
 * whole into the store before measuring (so the figures are the store's path through LazyFS),
 * with or without an access log. Files the benchmark creates in the mount are local writes.
 */
import fs from "node:fs";
import path from "node:path";
import { Engine } from "../src/fetch/index.js";
import { AccessLog, LazyFileSystem, mountLazyFs, withAccessLog } from "../src/lazy/index.js";
import { LocalOrigin } from "../src/origin/index.js";

export interface LazyBenchMount {
  dir: string;
  unmount(): Promise<{ records: number; requests: number; dropped: number } | null>;
}

export async function mountLazyBench(
  root: string,
  name: string,
  source: string,
  accessLog?: string,
): Promise<LazyBenchMount> {
  const dir = path.join(root, name);
  const cacheDir = path.join(root, `${name}-cache`);
  fs.mkdirSync(dir, { recursive: true });
  const st = fs.statSync(source);
  const target = `/${path.basename(source)}`;
  const engine = await Engine.open({ cacheDir, origin: new LocalOrigin("/") });
  const meta = { mode: st.mode, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs };
  const spec = {
    files: [
      {
        targetPath: target,
        type: "file" as const,
        size: st.size,
        policy: "lazy" as const,
        served: true,
        ...meta,
      },
    ],
    dirs: [],
  };
  const lazy = new LazyFileSystem(spec, engine);
  await engine.addFile({ id: target, originPath: source, size: st.size, policy: "lazy", ...meta });
  engine.startPrefetch();
  await engine.whenIndependent();
  const log = accessLog ? await AccessLog.open(accessLog) : undefined;
  const m = await mountLazyFs({ mountpoint: dir }, log ? withAccessLog(lazy, log) : lazy);
  return {
    dir,
    unmount: async () => {
      await m.unmount();
      await log?.close();
      await engine.close();
      fs.rmSync(cacheDir, { recursive: true, force: true });
      return log ? log.figures() : null;
    },
  };
}
