/**
 * A FUSE server in its own process, for tests of crashes and signals:
 * `node server-child.js <mountpoint>` mounts a MemoryFileSystem with one file "hello" and
 * unmounts on SIGINT/SIGTERM; it prints "ready" once mounted.
 */
import { MemoryFileSystem, mount, unmountOnSignals } from "../../src/fuse/index.js";

const mountpoint = process.argv[2];
const fsys = new MemoryFileSystem();
fsys.addFile("hello", "hello from child\n");
const m = await mount(mountpoint, fsys, { subtype: "testchild" });
unmountOnSignals(m);
process.stdout.write("ready\n");
await m.closed;
