/**
 * Mounts one of the example file systems for manual runs (e.g. pjdfstest), until SIGINT/SIGTERM:
 * `node dist/test/fuse/mount-example.js passthrough <mountpoint> <source-dir>` or
 * `node dist/test/fuse/mount-example.js memory <mountpoint>`. Mounted with allow_other and
 * default_permissions (the kernel checks modes for callers other than root); prints "ready".
 * The passthrough example asks for kernel passthrough (LAZYFS_FUSE_PASSTHROUGH=0: without);
 * the session's passthrough status goes to stderr.
 */
import {
  type FileSystem,
  MemoryFileSystem,
  mount,
  PassthroughFileSystem,
  unmountOnSignals,
} from "../../src/fuse/index.js";

const [kind, mountpoint, source] = process.argv.slice(2);
let fsys: FileSystem;
if (kind === "memory") fsys = new MemoryFileSystem();
else if (kind === "passthrough" && source) fsys = new PassthroughFileSystem(source);
else {
  process.stderr.write("usage: mount-example.js memory|passthrough <mountpoint> [source]\n");
  process.exit(2);
}
const m = await mount(mountpoint, fsys, {
  subtype: kind,
  allowOther: true,
  defaultPermissions: true,
  passthrough: kind === "passthrough",
});
process.stderr.write(`passthrough: ${JSON.stringify(m.session.passthrough)}\n`);
unmountOnSignals(m);
process.stdout.write("ready\n");
await m.closed;
process.stderr.write(`passthrough at the end: ${JSON.stringify(m.session.passthrough)}\n`);
