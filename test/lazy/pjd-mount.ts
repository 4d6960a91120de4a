/**
 * Mounts a LazyFS whose /lazy is a lazy directory over a LocalOrigin directory, for running
 * pjdfstest inside it (scripts/pjdfstest-lazy.sh): `node dist/test/lazy/pjd-mount.js
 * MOUNTPOINT ORIGIN_DIR CACHE_DIR`; prints "ready" and serves until SIGTERM.
 */
import { LocalOrigin } from "../../src/origin/index.js";
import { mountLazy } from "./helpers.js";

const [mountpoint, originDir, cacheDir] = process.argv.slice(2);
if (!mountpoint || !originDir || !cacheDir) {
  console.error("usage: pjd-mount MOUNTPOINT ORIGIN_DIR CACHE_DIR");
  process.exit(2);
}
const f = await mountLazy({
  mountpoint,
  cacheDir,
  origin: new LocalOrigin(),
  spec: { files: [], dirs: [], lazyDirs: [{ targetPath: "/lazy", originPath: originDir }] },
});
console.log("ready");
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => void f.close().then(() => process.exit(0)));
}
